"""Metrics under DDP are those of one process: every val and test metric (and the loss, and the
confusion matrix) of 2 and 3 gloo ranks equals one process's on the same checkpoint and data,
and scikit-learn's computed from the predictions, for split sizes that no rank count divides
and batch sizes that leave a short last batch.

Lightning's default DistributedSampler pads the ranks with repeated samples, which the metrics
then count; `SplitsDataModule` gives each rank an unpadded share instead.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import QUIET, cli, cli_process

pytestmark = pytest.mark.slow
# val 37 and test 41 samples: neither 2 nor 3 divides them, nor the batch sizes used below
SIZES = {"train": 60, "val": 37, "test": 41}
CLASSES = 4


def write_data(folder: Path, task: str) -> Path:
    """Random sequences (length 12, 2 features) in .npz files, and a config that reads them."""
    generator = np.random.default_rng(0)
    for split, size in SIZES.items():
        x = generator.normal(size=(size, 12, 2)).astype(np.float32)
        if task == "classification":
            y = generator.integers(0, CLASSES, size=size)
        else:
            y = generator.normal(size=size).astype(np.float32)
        np.savez(folder / f"{split}.npz", x=x, y=y)
    config = folder / "seq.yaml"
    config.write_text(
        "model:\n  class_path: SequenceClassifier\n  init_args:\n    hidden_size: 8\n"
        "data:\n  class_path: SequenceFileDataModule\n  init_args:\n"
        + "".join(f"    {split}: {folder / split}.npz\n" for split in SIZES)
        + f"    task: {task}\n    batch_size: 8\n"
        "trainer:\n  max_epochs: 2\n"
    )
    return config


def trained_run(folder: Path, task: str) -> Path:
    cli("fit", "-c", write_data(folder, task), *QUIET)
    (run,) = (folder / "logs" / "seq").glob("version_*")
    return run


def evaluate(run: Path, command: str, devices: int, batch_size: int) -> dict[str, float]:
    """`python -m project COMMAND` of the run's best checkpoint; the metrics.json values."""
    strategy = "ddp" if devices > 1 else "auto"
    ddp = ["--trainer.devices", str(devices), "--trainer.strategy", strategy]
    result = cli_process(
        command,
        "-c",
        run / "config.yaml",
        "--ckpt_path",
        "best",
        "--trainer.accelerator",
        "cpu",
        *ddp,
        "--data.init_args.batch_size",
        batch_size,
        *QUIET,
        cwd=run.parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "metrics.json").read_text())


def newest_image(run: Path, tag: str) -> bytes:
    """The encoded image last logged under `tag` in the run's newest event file that has it."""
    for events in sorted(run.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)[
        ::-1
    ]:
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["images"]:
            return accumulator.Images(tag)[-1].encoded_image_string
    raise AssertionError(f"no {tag} image in {run}")


def predictions(run: Path) -> np.ndarray:
    with (run / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    return np.array([[float(v) for k, v in row.items() if k != "index"] for row in rows])


def split_targets(folder: Path, split: str) -> np.ndarray:
    return np.load(folder / f"{split}.npz")["y"]


@pytest.mark.parametrize(("devices", "batch_size"), [(2, 5), (3, 4)])
def test_classification_metrics_under_ddp_equal_one_process(
    workdir: Path, devices: int, batch_size: int
) -> None:
    run = trained_run(workdir, "classification")
    for command, stage in (("validate", "val"), ("test", "test")):
        one = evaluate(run, command, 1, 7)
        one_matrix = newest_image(run, f"{stage}/confusion_matrix")
        many = evaluate(run, command, devices, batch_size)
        names = sorted(k for k in one if k.startswith(f"{stage}/") and not k.endswith("_best"))
        assert {"acc", "f1_weighted", "f1_macro", "loss"} <= {n.split("/")[1] for n in names}
        for name in names:
            assert many[name] == pytest.approx(one[name], abs=1e-6), (name, many[name], one[name])
        assert newest_image(run, f"{stage}/confusion_matrix") == one_matrix

    # the test metrics against scikit-learn's, from one process's predictions of the same split
    result = cli_process(
        "predict", "-c", run / "config.yaml", "--ckpt_path", "best", *QUIET, cwd=workdir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = predictions(run)
    truth, predicted, probs = split_targets(workdir, "test"), table[:, 0], table[:, 1:]
    assert len(truth) == SIZES["test"] == len(table)
    expected = {
        "test/acc": accuracy_score(truth, predicted),
        "test/f1_weighted": f1_score(truth, predicted, average="weighted"),
        "test/f1_macro": f1_score(truth, predicted, average="macro"),
        # probabilities are written with 6 significant digits
        "test/loss": -np.log(probs[np.arange(len(truth)), truth]).mean(),
    }
    for name, value in expected.items():
        assert many[name] == pytest.approx(value, abs=1e-4), (name, many[name], value)
    # 250/369 counted as 251/370 was the bug: the count itself must be exact
    correct = round(many["test/acc"] * SIZES["test"])
    assert correct == (truth == predicted).sum()
    assert confusion_matrix(truth, predicted).sum() == SIZES["test"]


def test_regression_metrics_under_ddp_equal_one_process(workdir: Path) -> None:
    run = trained_run(workdir, "regression")
    one = evaluate(run, "test", 1, 6)
    three = evaluate(run, "test", 3, 5)
    for name in ("test/loss", "test/mse", "test/mae"):
        assert three[name] == pytest.approx(one[name], abs=1e-6), name
    result = cli_process(
        "predict", "-c", run / "config.yaml", "--ckpt_path", "best", *QUIET, cwd=workdir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    truth, values = split_targets(workdir, "test"), predictions(run)[:, 0]
    assert three["test/mse"] == pytest.approx(mean_squared_error(truth, values), abs=1e-4)
    assert three["test/mae"] == pytest.approx(mean_absolute_error(truth, values), abs=1e-4)
    assert three["test/loss"] == pytest.approx(three["test/mse"], abs=1e-6)


def test_validation_during_ddp_fit_picks_the_checkpoint_one_process_would(workdir: Path) -> None:
    """The monitored val/loss of each epoch under 2-rank DDP equals the one-process value of the
    same weights: the best checkpoint is chosen on exact numbers."""
    run = trained_run(workdir, "classification")
    config = run / "config.yaml"
    result = cli_process(
        "fit",
        "-c",
        config,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_epochs",
        "2",
        *QUIET,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp_run = max(run.parent.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    assert ddp_run != run
    best = torch.load(next((ddp_run / "checkpoints").glob("best*.ckpt")), weights_only=True)
    monitored = next(v for k, v in best["callbacks"].items() if k.startswith("BestAndLast"))
    one = evaluate(ddp_run, "validate", 1, 7)
    assert float(monitored["best_model_score"]) == pytest.approx(one["val/loss"], abs=1e-6)
