"""What `fit` prints when it ends: where the run is, how good it got, and what to run next."""

import re
from pathlib import Path

from lightning import Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

from project.checkpoints import checkpoint_step, read_checkpoint_state
from project.runs import CONFIG, latest_checkpoint, run_folder_on_rank_zero


def print_run_summary(trainer: Trainer, seconds: float, resumed_from: int | None = None) -> None:
    """Prints the summary; never fails a run that trained (a broken line is left out).

    `resumed_from`: the step of the checkpoint this process continued, if any.
    """
    try:
        lines = summary_lines(trainer, seconds, resumed_from)
    except Exception as error:  # noqa: BLE001 (the summary is a courtesy; the run is done)
        lines = [f"fit finished; no summary ({type(error).__name__}: {error})"]
    width = max(map(len, lines))
    print("\n".join(["─" * width, *lines, "─" * width]))


def summary_lines(trainer: Trainer, seconds: float, resumed_from: int | None) -> list[str]:
    # only rank 0 prints the summary; a run folder only where a logger made one
    run = run_folder_on_rank_zero(trainer) if trainer.logger else None
    epochs, steps = trainer.current_epoch, trainer.global_step
    best = trainer.checkpoint_callback
    best_score = getattr(best, "best_model_score", None)
    ranks_started = trained_in_processes_started(trainer, run)
    if ranks_started is not None:
        epochs, steps, best_score = ranks_started
    if resumed_from is None:
        lines = [f"fit took {seconds:.1f} s ({epochs} epochs, {steps} steps)"]
    else:
        lines = [
            f"fit took {seconds:.1f} s: resumed at step {resumed_from}, trained "
            f"{steps - resumed_from} steps to step {steps}; the run has {epochs} epochs"
        ]
    if best is not None and getattr(best, "best_model_path", ""):
        epoch = re.search(r"epoch=(\d+)", Path(best.best_model_path).name)
        at = f" at epoch {epoch.group(1)}" if epoch else ""
        lines.append(f"best checkpoint: {best.best_model_path}")
        if best_score is not None:  # unknown after a resume from a checkpoint outside a run
            lines.append(f"best {best.monitor}: {float(best_score):.4f}{at}")
    averaging = [c for c in trainer.callbacks if isinstance(c, WeightAveraging)]
    if averaging:
        lines.append(
            f"weights: the average of {type(averaging[0]).__name__}, as in validation, the "
            "checkpoints, test, predict and export"
        )
    metrics = trainer.callback_metrics.items()
    tests = {k: v.item() for k, v in metrics if k.startswith(("test/", "test_"))}
    if tests:
        lines.append("test: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(tests.items())))
    if run is not None and (run / CONFIG).exists():
        which = "best" if best is not None and getattr(best, "best_model_path", "") else "last"
        lines += [
            f"run folder: {run}  (metrics.json, config.yaml, checkpoints/)",
            curves_line(trainer, run),
            f"test:       python -m project test -c {run}/config.yaml --ckpt_path {which}",
            f"predict:    python -m project predict -c {run}/config.yaml --ckpt_path {which}",
        ]
    return lines


def trained_in_processes_started(
    trainer: Trainer, run: Path | None
) -> tuple[int, int, float | None] | None:
    """Epochs, steps and best score of a fit that `ddp_fork` or `ddp_spawn` ran in processes they
    started: those send this one the weights, the state and the metrics, not the loops' progress
    or the best score, so they come from the `last.ckpt` rank 0 wrote. None where this process
    trained (its trainer counted steps) or no last checkpoint says."""
    last = None if run is None else latest_checkpoint(run)
    if trainer.global_step or last is None:
        return None
    checkpoint = read_checkpoint_state(last)
    epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    best = trainer.checkpoint_callback
    state = checkpoint.get("callbacks", {}).get(getattr(best, "state_key", None), {})
    score = state.get("best_model_score")
    return epochs, checkpoint_step(checkpoint), None if score is None else float(score)


def curves_line(trainer: Trainer, run: Path) -> str:
    """Where the run's curves are, for its first logger (configs/logger/)."""
    logger = trainer.logger
    if isinstance(logger, TensorBoardLogger):
        return f"curves:     tensorboard --logdir {run.parent.parent}   (or: make tensorboard)"
    if isinstance(logger, CSVLogger):
        return f"curves:     {run}/metrics.csv"
    if isinstance(logger, MLFlowLogger):
        return f"curves:     MLflow at {logger.experiment.tracking_uri}, run {logger.run_id}"
    return f"curves:     {type(logger).__name__} (its files: {run})"
