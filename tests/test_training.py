"""Real training runs through the CLI, as `make train` does them."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import CONFIGS, QUIET, cli, run_dirs


def scalars(run: Path) -> dict[str, list]:
    """Every scalar in the run's TensorBoard event files, by tag."""
    tags: dict[str, list] = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events)).Reload()
        for tag in accumulator.Tags()["scalars"]:
            tags.setdefault(tag, []).extend(accumulator.Scalars(tag))
    return tags


@pytest.mark.slow
def test_default_experiment_learns_and_logs_everything(workdir: Path) -> None:
    cli("fit", "-c", CONFIGS / "gru.yaml", "--test_after_fit", "true", *QUIET)
    (run,) = run_dirs(workdir, "gru")
    metrics = json.loads((run / "metrics.json").read_text())

    # MNIST-1D has 10 balanced classes: chance is 10%; the paper's GRU reached 91%
    assert metrics["test/acc"] >= 0.95
    assert {"val/acc", "val/f1_weighted", "val/f1_macro", "test/f1_weighted"} <= set(metrics)

    logged = scalars(run)
    assert len(logged["train/loss_step"]) >= 20, "a short run must still draw a training curve"
    assert {"val/acc", "val/acc_best", "test/acc", "val/loss"} <= set(logged)

    # validating the best checkpoint reproduces what was logged when it was saved
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    epoch = int(best.stem.split("epoch=")[1].split("-")[0])
    during_fit = [s.value for s in sorted(logged["val/acc"], key=lambda s: s.step)]
    assert metrics["val/acc"] == pytest.approx(during_fit[epoch], abs=1e-6)

    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_regression_beats_predicting_the_mean(workdir: Path) -> None:
    cli("fit", "-c", CONFIGS / "signal_frequency.yaml", "--test_after_fit", "true", *QUIET)
    (run,) = run_dirs(workdir, "signal_frequency")
    metrics = json.loads((run / "metrics.json").read_text())
    # the target's variance, what predicting the mean scores, is 0.333
    assert metrics["test/mse"] < 0.01
    assert metrics["test/mae"] < 0.1
