"""The recurrent initialisation options: which parameters each one sets, for every cell, layer
count and direction; old checkpoints; packed, multivariate data through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

from project.errors import UserError
from project.models import RecurrentNet, SequenceClassifier
from tests.conftest import QUIET, SEQUENCE, cli, run_dirs

HIDDEN = 6
NEW_OPTIONS = ("forget_bias", "recurrent_init", "nonlinearity")


def build(seed: int = 0, **options: object) -> RecurrentNet:
    torch.manual_seed(seed)
    return RecurrentNet(3, 4, hidden_size=HIDDEN, **options)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_without_options_the_weights_are_torchs_own(
    cell: str, num_layers: int, bidirectional: bool
) -> None:
    shape = {"cell": cell, "num_layers": num_layers, "bidirectional": bidirectional}
    net = build(**shape, forget_bias=None, recurrent_init="default")
    torch.manual_seed(0)
    torch_rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](
        3, HIDDEN, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    )
    torch_head = nn.Linear(HIDDEN * (2 if bidirectional else 1), 4)
    expected = {**torch_rnn.state_dict(), **torch_head.state_dict()}
    ours = {name.split(".", 1)[1]: value for name, value in net.state_dict().items()}
    assert ours.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("forget_bias", [None, 1.0, -0.5, 2.0])
@pytest.mark.parametrize("recurrent_init", ["default", "orthogonal", "identity"])
def test_each_option_sets_its_own_parameters_and_no_other(
    cell: str, num_layers: int, bidirectional: bool, forget_bias: float | None, recurrent_init: str
) -> None:
    shape = {"cell": cell, "num_layers": num_layers, "bidirectional": bidirectional}
    reference = dict(build(**shape, forget_bias=None).named_parameters())
    net = build(**shape, forget_bias=forget_bias, recurrent_init=recurrent_init)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    eye = torch.eye(HIDDEN)
    untouched = 0
    for name, value in net.named_parameters():
        before = reference[name]
        if name.startswith("rnn.weight_hh") and recurrent_init != "default":
            blocks = value.detach().split(HIDDEN)
            assert len(blocks) == gates
            for block in blocks:
                product = block @ block.T  # orthogonal: Q Qᵀ = I; the identity too
                torch.testing.assert_close(product, eye, atol=1e-5, rtol=0)
                if recurrent_init == "identity":
                    assert torch.equal(block, eye)
            assert not torch.equal(value, before)
        elif name.startswith("rnn.bias_") and cell == "lstm" and forget_bias is not None:
            forget = slice(HIDDEN, 2 * HIDDEN)
            wanted = forget_bias if name.startswith("rnn.bias_ih") else 0.0
            assert torch.all(value[forget] == wanted)
            keep = torch.ones(len(value), dtype=torch.bool)
            keep[forget] = False
            assert torch.equal(value[keep], before[keep])  # the other gates keep torch's draw
        else:
            assert torch.equal(value, before), name
            untouched += 1
    assert untouched >= 2  # the head's weight and bias at least


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_forget_gate_sees_exactly_the_asked_bias(num_layers: int, bidirectional: bool) -> None:
    net = build(cell="lstm", num_layers=num_layers, bidirectional=bidirectional, forget_bias=1.0)
    lstm = net.rnn
    for layer in range(num_layers):
        for suffix in ["", "_reverse"] if bidirectional else [""]:
            ih = getattr(lstm, f"bias_ih_l{layer}{suffix}")
            hh = getattr(lstm, f"bias_hh_l{layer}{suffix}")
            total = (ih + hh)[HIDDEN : 2 * HIDDEN]
            assert torch.all(total == 1.0)
    # with zero input and state, the gate is the sigmoid of its bias alone: σ(1) ≈ 0.73
    gates = lstm.weight_ih_l0 @ torch.zeros(3) + lstm.bias_ih_l0 + lstm.bias_hh_l0
    torch.testing.assert_close(
        torch.sigmoid(gates[HIDDEN : 2 * HIDDEN]).mean(), torch.tensor(0.7311), atol=1e-4, rtol=0
    )


def test_the_defaults_are_the_fields_lstm_and_an_unchanged_gru() -> None:
    lstm = build(cell="lstm")
    assert torch.all(lstm.rnn.bias_ih_l0[HIDDEN : 2 * HIDDEN] == 1.0)
    gru, torch_gru = build(cell="gru"), build(cell="gru", forget_bias=None)
    for (name, a), b in zip(gru.state_dict().items(), torch_gru.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_relu_is_the_plain_rnns_only() -> None:
    assert build(cell="rnn", nonlinearity="relu").rnn.nonlinearity == "relu"
    with pytest.raises(UserError, match="nonlinearity 'relu' is the plain RNN's, not the lstm's"):
        build(cell="lstm", nonlinearity="relu")


def test_a_checkpoint_from_before_the_options_loads_and_predicts_the_same(workdir: Path) -> None:
    """A run saved without the new hparams (in its checkpoint and its config.yaml) and with
    torch's init (any forget bias): the defaults must not touch its weights."""
    cli("fit", "-c", SEQUENCE / "lstm.yaml", "--model.init_args.hidden_size", "8",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1", *QUIET)  # fmt: skip
    run = run_dirs(workdir, "lstm")[0]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    for option in NEW_OPTIONS:
        del checkpoint["hyper_parameters"][option]
    state = checkpoint["state_dict"]
    torch.manual_seed(1)
    for name in ("net.rnn.bias_ih_l0", "net.rnn.bias_hh_l0"):
        state[name] = torch.randn_like(state[name])  # far from the new default's 1 and 0
    old = run / "checkpoints" / "old.ckpt"
    torch.save(checkpoint, old)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for option in NEW_OPTIONS:
        del config["model"]["init_args"][option]
    (run / "config.yaml").write_text(yaml.safe_dump(config))

    loaded = SequenceClassifier.load_from_checkpoint(old)
    weights = loaded.state_dict()
    for name, value in state.items():
        assert torch.equal(weights[name], value), name
    cli("predict", "-c", run / "config.yaml", "--ckpt_path", old, *QUIET)
    predicted = np.loadtxt(run / "predictions.csv", delimiter=",", skiprows=1)[:, 2:]
    x = torch.tensor(make_dataset(get_dataset_args())["x_test"], dtype=torch.float32)
    loaded.eval()
    with torch.no_grad():
        expected = torch.softmax(loaded(x), dim=-1).numpy()
    np.testing.assert_allclose(predicted, expected, atol=1e-4)


def end_of_sequence_data(path: Path, samples: int, seed: int, lengths: bool = True) -> None:
    """Sequences of 4 noisy features and 40 to 80 real steps, padded to 80 with more noise;
    the class is the feature that rises over the last 4 real steps. Decoys rise over the first
    10 steps and the last 4 padded ones: the cell must forget the first, and only packing
    (`lengths`) hides the second."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(40, 81, samples)
    x = rng.normal(0, 0.5, (samples, 80, 4)).astype(np.float32)
    y = rng.integers(0, 4, samples)
    for i, (n, label) in enumerate(zip(steps, y, strict=True)):
        x[i, :10, rng.integers(0, 4)] += 1.5
        x[i, -4:, rng.integers(0, 4)] += 1.5
        x[i, n - 4 : n] = rng.normal(0, 0.5, (4, 4))  # the real end: no decoy, the class alone
        x[i, n - 4 : n, label] += 1.5
    np.savez(path, x=x, y=y, **({"lengths": steps} if lengths else {}))


OPTIONS = {
    "lstm_forget_bias_1": ["--model.init_args.cell", "lstm"],
    "gru_orthogonal": ["--model.init_args.cell", "gru",
                       "--model.init_args.recurrent_init", "orthogonal"],
    "rnn_orthogonal": ["--model.init_args.cell", "rnn",
                       "--model.init_args.recurrent_init", "orthogonal"],
    "irnn": ["--model.init_args.cell", "rnn", "--model.init_args.recurrent_init", "identity",
             "--model.init_args.nonlinearity", "relu"],
    # the control: the same LSTM reading the padding as data must fall for the late decoy
    "lstm_without_lengths": ["--model.init_args.cell", "lstm"],
}  # fmt: skip


@pytest.mark.parametrize("name", OPTIONS)
def test_options_learn_the_end_of_long_packed_multivariate_sequences(
    workdir: Path, name: str
) -> None:
    packed = name != "lstm_without_lengths"
    end_of_sequence_data(workdir / "train.npz", 800, seed=0, lengths=packed)
    end_of_sequence_data(workdir / "test.npz", 200, seed=1, lengths=packed)
    config = workdir / "end.yaml"
    config.write_text(
        "seed_everything: 0\n"
        "model:\n  class_path: SequenceClassifier\n  init_args:\n    hidden_size: 16\n"
        "data:\n  class_path: SequenceFileDataModule\n"
        "  init_args: {train: train.npz, test: test.npz, batch_size: 50}\n"
        "optimizer:\n  class_path: torch.optim.Adam\n  init_args: {lr: 0.01}\n"
        "trainer: {max_epochs: 8, gradient_clip_val: 1.0}\n"
    )
    cli("fit", "-c", config, *OPTIONS[name], "--test_after_fit", "true", *QUIET)
    metrics = json.loads((run_dirs(workdir, "end")[0] / "metrics.json").read_text())
    assert (metrics["test/acc"] >= 0.9) == packed, metrics
