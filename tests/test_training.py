"""Real training runs through the CLI, as `make train` does them."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.callbacks import callback_flag
from tests.conftest import QUIET, SEQUENCE, cli, run_dirs


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
    cli("fit", "-c", SEQUENCE / "gru.yaml", "--test_after_fit", "true", *QUIET)
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
    cli("fit", "-c", SEQUENCE / "signal_frequency.yaml", "--test_after_fit", "true", *QUIET)
    (run,) = run_dirs(workdir, "signal_frequency")
    metrics = json.loads((run / "metrics.json").read_text())
    # the target's variance, what predicting the mean scores, is 0.333
    assert metrics["test/mse"] < 0.01
    assert metrics["test/mae"] < 0.1


@pytest.mark.parametrize(
    ("every", "accumulate", "extra"),
    [(1, 1, []), (3, 1, []), (4, 2, []), (3, 1, ["--trainer.max_steps", "11"])],
)
def test_the_step_loss_is_logged_on_every_step_lightning_writes(
    every: int, accumulate: int, extra: list[str], workdir: Path
) -> None:
    """The model logs `train/loss_step` only on the steps Lightning writes (a `self.log` call
    is a step's largest template cost); Lightning's own choice, seen through a probe logged on
    every batch, is the oracle, over epochs, accumulation and a run cut by max_steps."""
    small = ["--data.init_args.batch_size", "50", "--model.init_args.hidden_size", "8"]
    cli(
        "fit", "-c", SEQUENCE / "gru.yaml", *small, *QUIET, *extra,
        "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "7",
        "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", str(every),
        "--trainer.accumulate_grad_batches", str(accumulate), *callback_flag("LogEveryStep"),
    )  # fmt: skip
    (run,) = run_dirs(workdir, "gru")
    logged = scalars(run)
    written = [s.step for s in logged["probe/step"]]
    assert written, "Lightning wrote no step"
    assert [s.step for s in logged["train/loss_step"]] == written
