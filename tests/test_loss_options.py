"""Loss options of every classifier: label smoothing, and class weights (given, or balanced from
the training labels), through the CLI."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import QUIET, SEQUENCE, cli, run_dirs

GRU = SEQUENCE / "gru.yaml"


def write_split(path: Path, counts: list[int], seed: int) -> Path:
    """Sequences (length 8, one feature) with `counts[c]` samples of class c."""
    generator = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    np.savez(path, x=generator.normal(size=(len(y), 8)).astype(np.float32), y=y)
    return path


def data_flags(folder: Path, train_counts: list[int]) -> list[str]:
    files = {
        "train": write_split(folder / "train.npz", train_counts, 0),
        "val": write_split(folder / "val.npz", [5] * len(train_counts), 1),
        "test": write_split(folder / "test.npz", [7, 6, 4][: len(train_counts)], 2),
    }
    flags = ["--data", "SequenceFileDataModule", "--model.init_args.hidden_size", "8"]
    for split, path in files.items():
        flags += [f"--data.init_args.{split}", str(path)]
    return [*flags, "--data.init_args.batch_size", "16", "--trainer.max_epochs", "1", *QUIET]


def test_balanced_class_weights_come_from_the_training_labels(workdir: Path) -> None:
    counts = [60, 30, 10]  # 100 samples: weights 100 / (3 × count)
    cli("fit", "-c", GRU, *data_flags(workdir, counts), "--model.init_args.class_weights",
        "balanced")  # fmt: skip
    (run,) = run_dirs(workdir, "gru")
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    expected = torch.tensor([100 / (3 * n) for n in counts])
    torch.testing.assert_close(state["class_weight"], expected)
    # evaluating the run uses the weights it trained with, from its checkpoint
    cli("validate", "-c", run / "config.yaml", "--ckpt_path", "last", *QUIET)


def test_label_smoothing_is_the_smoothed_cross_entropy_of_the_predictions(workdir: Path) -> None:
    """test/loss with smoothing ε equals (1 − ε)·CE + ε·mean over classes of −log p, computed
    from predictions.csv of the same checkpoint; the given class weights weigh each sample."""
    cli("fit", "-c", GRU, *data_flags(workdir, [20, 20, 20]))
    (run,) = run_dirs(workdir, "gru")
    cli("predict", "-c", run / "config.yaml", "--ckpt_path", "last", *QUIET)
    with (run / "predictions.csv").open() as file:
        probs = np.array([[float(r[f"prob_{k}"]) for k in range(3)] for r in csv.DictReader(file)])
    truth = np.load(workdir / "test.npz")["y"]
    log_p = np.log(probs)
    ce = -log_p[np.arange(len(truth)), truth]
    for smoothing, weights in ((0.2, None), (0.0, [1.0, 2.0, 0.5])):
        options = ["--model.init_args.label_smoothing", str(smoothing)]
        if weights is not None:
            options += ["--model.init_args.class_weights", json.dumps(weights)]
        cli("test", "-c", run / "config.yaml", "--ckpt_path", "last", *options, *QUIET)
        logged = json.loads((run / "metrics.json").read_text())["test/loss"]
        per_sample = (1 - smoothing) * ce + smoothing * -log_p.mean(axis=1)
        w = np.ones(len(truth)) if weights is None else np.array(weights)[truth]
        # the weighted mean over all samples, whatever the batches
        expected = (w * per_sample).sum() / w.sum()
        assert logged == pytest.approx(expected, abs=1e-4), (smoothing, weights)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model.init_args.label_smoothing", "1.0"], "model.label_smoothing must be in [0, 1)"),
        (["--model.init_args.class_weights", "[1.0, 2.0]"], "must be 10 positive numbers"),
        (["--model.init_args.class_weights", "[1,1,1,1,1,1,1,1,1,0]"], "must be 10 positive"),
    ],
)
def test_bad_loss_options_are_one_line(
    flags: list[str], message: str, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli("fit", "-c", GRU, *flags, "--trainer.fast_dev_run", "true", *QUIET)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error
    assert not (workdir / "logs").exists() or not any((workdir / "logs").rglob("*.ckpt"))


def test_loss_options_are_for_classification(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli("fit", "-c", SEQUENCE / "signal_frequency.yaml", "--model.init_args.label_smoothing",
            "0.1", "--trainer.fast_dev_run", "true", *QUIET)  # fmt: skip
    assert stopped.value.code == 2
    assert "are for classification" in capsys.readouterr().err
