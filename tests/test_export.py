"""`python -m project.export`: `.pt2` and ONNX files that take any batch and sequence length and
give the checkpoint's outputs; the recurrence they are traced from; what export refuses."""

import runpy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from project.export import main as export_main
from project.export_inputs import load_model, read_config
from project.models.recurrence import final_states, step
from project.models.sequence import RecurrentNet
from tests.conftest import QUIET, ROOT, SEQUENCE, cli, run_dirs

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export needs the `export` extra")
export_case = runpy.run_path(str(ROOT / "scripts" / "export_table.py"))["export_case"]
TINY = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", *QUIET]


@pytest.mark.parametrize(
    ("cell", "mode"),
    [
        (nn.GRUCell, "GRU"),
        (nn.LSTMCell, "LSTM"),
        (nn.RNNCell, "RNN_TANH"),
        (nn.RNNCell, "RNN_RELU"),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_one_step_is_torchs_cell(cell: type, mode: str, bias: bool) -> None:
    torch.manual_seed(len(mode) + bias)
    options = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    reference = cell(5, 7, bias=bias, **options)
    x, h, c = torch.randn(6, 5), torch.randn(6, 7), torch.randn(6, 7)
    gates_x = nn.functional.linear(x, reference.weight_ih, reference.bias_ih)
    got_h, got_c = step(mode, gates_x, (h, c), reference.weight_hh, reference.bias_hh)
    if mode == "LSTM":
        expected_h, expected_c = reference(x, (h, c))
        torch.testing.assert_close(got_c, expected_c)
    else:
        expected_h = reference(x, h)
    torch.testing.assert_close(got_h, expected_h)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_the_loop_gives_what_packing_gives(cell: str) -> None:
    """Two bidirectional layers over sequences padded to 9 steps, of lengths 1 to 9: the
    second layer reads both directions of the first, so a padded step that leaked into either
    direction would show."""
    torch.manual_seed(0)
    net = RecurrentNet(3, 4, cell, hidden_size=6, num_layers=2, bidirectional=True).eval()
    x, lengths = torch.randn(6, 9, 3), torch.tensor([9, 1, 4, 9, 7, 2])
    with torch.no_grad():
        expected = net(x, lengths)  # packed
        torch.testing.assert_close(net.head(final_states(net.rnn, x, lengths)), expected)
        x[1, 1:] = 100.0  # what lies after a sequence's end changes nothing
        torch.testing.assert_close(net.head(final_states(net.rnn, x, lengths)), expected)


@pytest.fixture
def padded_run(workdir: Path) -> Path:
    """A 2-step GRU run on the padded waves of signal_frequency, whose batches carry lengths."""
    cli("fit", "-c", SEQUENCE / "signal_frequency.yaml", *TINY)
    (run,) = run_dirs(workdir, "signal_frequency")
    return run


def test_a_padded_run_exports_for_any_batch_and_length(
    padded_run: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = padded_run / "checkpoints" / "last.ckpt"
    export_main([str(checkpoint)])
    out = capsys.readouterr().out
    assert "inputs (4, 60, 1) float32, lengths (4,) int64" in out  # the data's batch, 60 steps
    assert out.count("(batch and time dynamic)") == 2
    folder = padded_run / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.pt2"]  # no TorchScript

    model = load_model(checkpoint, read_config(padded_run / "config.yaml"))
    program = torch.export.load(folder / "model.pt2").module()
    session = onnxruntime.InferenceSession(folder / "model.onnx")
    generator = torch.Generator().manual_seed(1)
    for batch, steps in [(11, 83), (2, 7), (1, 60)]:  # none is the example's 4 × 60
        x = torch.randn(batch, steps, 1, generator=generator)
        lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
        with torch.no_grad():
            expected = model(x, lengths)
        torch.testing.assert_close(program(x, lengths), expected)
        (got,) = session.run(None, {"inputs": x.numpy(), "lengths": lengths.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-5, rtol=1e-4)


def test_the_readme_model_exports_from_its_own_module(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A model outside `project` (the README's my_models.ConvClassifier, which sets no
    example_input_array): the config's module is imported, the example is the data's."""
    monkeypatch.syspath_prepend(str(workdir))
    (file,) = export_case("readme_conv1d", workdir, ["pt2"])
    assert "example: a batch of NoisySines: inputs (4, 64, 1) float32" in capsys.readouterr().out
    assert file.dynamic == "batch and time" and file.max_difference < 1e-5


PLAIN = """
import torch
from lightning import LightningModule
from torch import nn


class PlainGRU(LightningModule):  # as Lightning's docs write one: no template base class
    def __init__(self, features: int = 3, hidden: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)
        self.example_input_array = torch.zeros(2, 12, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[1][-1])
"""


def test_a_plain_lightning_module_exports_with_its_own_example(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A LightningModule of the user's own module, a config without data: the model's
    example_input_array. Its own nn.GRU is traced step by step, so the length stays 12."""
    (workdir / "plain_models.py").write_text(PLAIN)
    monkeypatch.syspath_prepend(str(workdir))
    model_config = {"class_path": "plain_models.PlainGRU", "init_args": {"hidden": 5}}
    (workdir / "config.yaml").write_text(yaml.safe_dump({"model": model_config}))
    model = load_model_of(workdir, model_config)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"hidden": 5}},
               workdir / "plain.ckpt")  # fmt: skip
    export_main([str(workdir / "plain.ckpt"), "--to", "pt2"])
    out = capsys.readouterr().out
    assert (
        "example: the model's example_input_array (the config names no data): x (2, 12, 3)" in out
    )
    assert "(batch dynamic)" in out and "(1×12" not in out  # checked on batches of 1, 5, 3
    program = torch.export.load(workdir / "export" / "model.pt2").module()
    x = torch.randn(9, 12, 3)
    torch.testing.assert_close(program(x), model.eval()(x))


def load_model_of(folder: Path, model_config: dict) -> torch.nn.Module:
    from importlib import import_module

    module, name = model_config["class_path"].rsplit(".", 1)
    return getattr(import_module(module), name)(**model_config["init_args"])


def test_the_class_comes_from_the_config_never_the_checkpoint(padded_run: Path) -> None:
    checkpoint = padded_run / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    state["hyper_parameters"].update(_class_path="os.system", _instantiator="builtins.exec")
    torch.save(state, checkpoint)
    model = load_model(checkpoint, read_config(padded_run / "config.yaml"))
    assert type(model).__name__ == "SequenceClassifier"


def one_line_error(capsys: pytest.CaptureFixture, *args: str | Path) -> str:
    with pytest.raises(SystemExit) as exit:
        export_main([str(a) for a in args])
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = one_line_error(capsys, tmp_path / "nope.ckpt")
    assert line == f"error: checkpoint {tmp_path / 'nope.ckpt'} does not exist"


def test_a_checkpoint_away_from_its_run_and_data(
    padded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Copied out of its run: one line asks for the config. Given one whose data is not on this
    machine: the model's own example_input_array, and a note that says why."""
    alone = tmp_path / "alone.ckpt"
    alone.write_bytes((padded_run / "checkpoints" / "last.ckpt").read_bytes())
    line = one_line_error(capsys, alone)
    assert line.startswith(f"error: no config {tmp_path / 'config.yaml'}: export rebuilds")
    assert line.endswith("name the run's config with --config")

    config = yaml.safe_load((padded_run / "config.yaml").read_text())
    config["data"] = {"class_path": "project.data.SequenceFileDataModule",
                      "init_args": {"train": str(tmp_path / "gone.npz")}}  # fmt: skip
    (tmp_path / "elsewhere.yaml").write_text(yaml.safe_dump(config))
    export_main([str(alone), "--config", str(tmp_path / "elsewhere.yaml"), "--to", "pt2"])
    out = capsys.readouterr().out
    assert "example: the model's example_input_array (the run's data cannot be loaded here:" in out
    assert "inputs (2, 40, 1) float32\n" in out  # SequenceClassifier's own example
    assert (tmp_path / "export" / "model.pt2").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["gru", "lstm", "rnn", "lstm_lengths", "rnn_lengths", "resnet18", "vgg16", "inception_v3"],
)
def test_every_shipped_model_exports_to_every_format(case: str, workdir: Path) -> None:
    """What `scripts/export_table.py` measures for the README's table: each file is checked
    by the command on fresh batches of 1, 5 and 3 (sequences: of 3 lengths) or not written."""
    pt2, onnx, torchscript = export_case(case, workdir)
    sequences = case in ("gru", "lstm", "rnn") or case.endswith("_lengths")
    for file in (pt2, onnx):
        assert file.problem is None and file.path.is_file()
        # an untrained Inception's outputs reach 1e8 in eval: a share of them
        assert file.max_difference <= 1e-5 * max(1.0, file.largest_output)
        assert file.dynamic == ("batch and time" if sequences else "batch")
    if sequences:
        assert torchscript.problem is None and torchscript.max_difference < 1e-4
    else:  # torchvision's center crop rounds a size, which jit's trace holds as a tensor
        assert torchscript.problem.startswith("TypeError: type Tensor doesn't define __round__")
        assert not torchscript.path.exists()
