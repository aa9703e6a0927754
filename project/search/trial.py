"""The fit side of a search trial: an ordinary `python -m project fit`, started by a search
worker (project/search/worker.py) with `PROJECT_TRIAL` in its environment, which adds
`TrialReporter`.

The environment, not a callback in the command line, so that the run's `config.yaml` stays the
plain config that `fit -c` repeats, and so that every DDP rank (started by Lightning or srun)
sees it.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from lightning import Callback, LightningModule, Trainer

from project.files import naming, written_whole
from project.runs import run_folder_on_rank_zero
from project.search.journal import WholeLinesJournal

T = TypeVar("T")
ENV = "PROJECT_TRIAL"
RESULT = "trial.json"  # written into the run folder when fit ends


def make_pruner(
    name: str,
    startup_trials: int,
    warmup_epochs: int,
    threshold: float | None = None,
    minimize: bool = True,
) -> optuna.pruners.BasePruner:
    """median (Optuna's default), hyperband, successive_halving, threshold (stops a trial whose
    metric is worse than `threshold` after the warmup: diverging ones), or none."""
    if name == "threshold":
        if threshold is None:
            raise ValueError("the threshold pruner needs --pruner_threshold")
        bound = {"upper": threshold} if minimize else {"lower": threshold}
        return optuna.pruners.ThresholdPruner(**bound, n_warmup_steps=warmup_epochs)
    if name == "median":
        return optuna.pruners.MedianPruner(startup_trials, warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs))
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs))
    return optuna.pruners.NopPruner()


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage URL, or a journal file path (`*.log`): a file, no server, safe for
    several processes and on a shared filesystem (Optuna's file lock), and on a full disk
    (project/search/journal.py)."""
    if "://" in url:
        # a connection the server dropped (restarted) is replaced before use, not failed on
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    return optuna.storages.JournalStorage(WholeLinesJournal(url))


# a database server restarted or briefly unreachable: how long a storage call is tried again
PATIENCE = 120.0


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a database storage raises when its server is gone (Optuna wraps some errors)."""
    import sqlalchemy.exc

    return (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)


def patiently(call: Callable[[], T], patience: float = PATIENCE) -> T:
    """`call()`, tried again every second while the storage's server is unreachable (a
    restart), for up to `patience` seconds; then its error goes on."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except storage_errors():
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def trial_settings() -> dict[str, Any] | None:
    text = os.environ.get(ENV)
    return json.loads(text) if text else None


def trial_hparams() -> dict[str, Any]:
    """The study and trial number, for the run's TensorBoard hparams (none outside a search)."""
    settings = trial_settings()
    if settings is None:
        return {}
    return {"search/study": settings["study"], "search/trial": settings["number"]}


def reporter_from_env() -> "TrialReporter | None":
    settings = trial_settings()
    return TrialReporter(**settings) if settings else None


class TrialReporter(Callback):
    """Reports the monitored metric to the trial after each validation and stops the run when
    the pruner says so; rank 0 asks, every rank follows its answer (a broadcast), so a pruned
    DDP trial ends on all ranks together. Writes `trial.json` (the best monitored value, whether
    pruned) into the run folder when fit ends; the worker tells Optuna from it."""

    def __init__(
        self,
        storage: str,
        study: str,
        number: int,
        pruner: str = "median",
        startup_trials: int = 5,
        warmup_epochs: int = 1,
        threshold: float | None = None,
    ) -> None:
        self.storage_url, self.study_name, self.number = storage, study, number
        self.pruner = (pruner, startup_trials, warmup_epochs, threshold)
        self.trial: optuna.trial.Trial | None = None
        self.pruned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        storage = make_storage(self.storage_url)
        study = optuna.load_study(study_name=self.study_name, storage=storage)
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        study.pruner = make_pruner(*self.pruner, minimize=minimize)
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        prune = False
        if self.trial is not None:
            value = trainer.callback_metrics.get(trainer.checkpoint_callback.monitor)
            if value is not None:
                # the epoch as the step: the same epoch of every trial is compared
                step = trainer.current_epoch
                try:
                    patiently(lambda: self.trial.report(float(value), step=step))
                    prune = patiently(self.trial.should_prune)
                except OSError as error:  # Optuna's journal writes name no file
                    if "://" not in self.storage_url:
                        naming(error, self.storage_url)
                    raise
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned = True
            trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.logger is None:
            return
        best = trainer.checkpoint_callback.best_model_score
        run = run_folder_on_rank_zero(trainer)  # with any logger
        result = {
            "value": None if best is None else float(best),
            "pruned": self.pruned,
            "epochs": trainer.current_epoch,
            "run": str(run),
        }
        with written_whole(Path(run, RESULT)) as file:
            file.write(json.dumps(result, indent=2) + "\n")
