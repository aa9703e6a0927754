"""The fit side of a search trial: an ordinary `python -m project fit`, started by a search
worker (project/search/worker.py) with `TrialReporter` added to its `run_callbacks` on the
command line (every DDP rank, started by Lightning or srun, runs the same command), so the run's
`config.yaml` names the trial it reported to; that config repeated after the trial ended trains
as any run and reports nothing. Also the Optuna pruners the search builds.
"""

import json
from pathlib import Path
from typing import Any

import optuna
from lightning import Callback, LightningModule, Trainer

from project.files import naming, written_whole
from project.runs import run_folder_on_rank_zero
from project.study_storage import make_storage, patiently

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

    def hparams(self) -> dict[str, Any]:
        """The study and trial number, for the run's TensorBoard hparams."""
        return {"search/study": self.study_name, "search/trial": self.number}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        # a trial's config.yaml repeated elsewhere (another folder, a laptop): its journal, a
        # path relative to where the search ran, is not there; opening it would create it
        if "://" not in self.storage_url and not Path(self.storage_url).exists():
            print(f"note: the study's journal {self.storage_url} is not here: not reporting")
            return
        storage = make_storage(self.storage_url)
        try:
            study = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:  # Optuna's "Record does not exist"
            print(f"note: study {self.study_name} is not in its storage: not reporting")
            return
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        study.pruner = make_pruner(*self.pruner, minimize=minimize)
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        if storage.get_trial(trial_id).state.is_finished():  # a trial's config.yaml repeated
            print(f"note: trial {self.number} of {self.study_name} has ended: not reporting")
            return
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
