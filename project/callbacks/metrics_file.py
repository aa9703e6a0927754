"""`metrics.json` and the hparams tab: a run's final metrics beside its hyperparameters."""

import json
from pathlib import Path
from typing import Any

import yaml
from lightning import Callback, LightningModule, Trainer

from project.callbacks.trial_reporter import TrialReporter
from project.files import written_whole
from project.hparams import run_hparams, tab_values
from project.run_loggers import log_hparams
from project.runs import CONFIG, METRICS, run_folder_on_rank_zero


def hparams_of(trainer: Trainer, log_dir: Path) -> dict[str, Any]:
    """The run's hyperparameters (`project.hparams`): from the `config.yaml` in
    `log_dir` it was started with, or, for a Trainer built without the CLI, the model's and
    data's own."""
    config = log_dir / CONFIG
    if config.is_file():
        return run_hparams(yaml.safe_load(config.read_text()))
    hparams = {"model": {k: v for k, v in trainer.lightning_module.hparams.items() if k[0] != "_"}}
    if trainer.datamodule is not None:
        hparams["data"] = dict(trainer.datamodule.hparams)
    return hparams


class MetricsFile(Callback):
    """Keeps `<log_dir>/metrics.json`: the latest val and test metrics, one flat JSON object.

    Written after fit (the last validation), after `validate` and after `test`; later values
    replace earlier ones under the same name, so after `make train` the file holds the best
    checkpoint's val and test metrics. The same metrics go to TensorBoard's hparams tab beside
    the run's hyperparameters, so the runs of a sweep compare in one table.
    """

    def __init__(self) -> None:
        # set by the CLI when a run is evaluated on other data than its own: the results go to
        # `metrics-<name>.json` beside the run's `metrics.json`
        self.other_data: str | None = None
        self.hparams_pending = False  # another LightningModule's, written once it has logged

    def _write(self, trainer: Trainer, stage: str) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        log_dir = run_folder_on_rank_zero(trainer)
        if log_dir is None:
            return
        name = f"metrics-{self.other_data}.json" if self.other_data else METRICS
        path = log_dir / name
        metrics = json.loads(path.read_text()) if path.exists() else {}
        prefixes = stage_prefixes(stage)
        metrics.update({k: v.item() for k, v in trainer.callback_metrics.items()
                        if k.startswith(prefixes)})  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path) as file:
            file.write(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a module of this template names its metrics; any other LightningModule's are known
        # once it has logged them, after its first validation
        names = getattr(pl_module, "metric_names", None)
        self.hparams_pending = True
        if names is not None:
            tags = {f"{stage}/{name}" for stage in ("val", "test") for name in names}
            self._write_hparams(trainer, tags | {f"val/{pl_module.headline}_best"})

    def _write_hparams(self, trainer: Trainer, names: set[str]) -> None:
        """The hparams record names the metric tags; TensorBoard shows the latest value of the
        scalars logged under those names, so the test metrics logged later appear too.
        TensorBoard keeps the first record of a run, so it is written once."""
        self.hparams_pending = False
        if not trainer.is_global_zero or not trainer.loggers:
            return
        log_dir = run_folder_on_rank_zero(trainer)
        if log_dir is None:  # fast_dev_run's stand-in logger: nothing is written
            return
        hparams = hparams_of(trainer, log_dir)
        # hparams.yaml too (Lightning wrote the model's init arguments there): what a person
        # reads as the run's settings, in the sections of its config
        path = log_dir / "hparams.yaml"
        with written_whole(path) as file:
            file.write(yaml.safe_dump(hparams, sort_keys=False))
        values = tab_values(hparams)
        for callback in trainer.callbacks:  # a search trial's study and number
            if isinstance(callback, TrialReporter):
                values |= callback.hparams()
        log_hparams(trainer, values, names)

    def _write_pending_hparams(self, trainer: Trainer) -> None:
        """Another LightningModule's hparams record, with the val metrics it logged (and their
        test names, for a later `test`)."""
        if self.hparams_pending and not trainer.sanity_checking:
            logged = [k for k in trainer.callback_metrics if k.startswith(stage_prefixes("val"))]
            self._write_hparams(trainer, {*logged, *("test" + k[3:] for k in logged)})

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write_pending_hparams(trainer)
        self._write(trainer, "val")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.training:
            self._write_pending_hparams(trainer)
        elif trainer.state.fn == "validate":
            self._write(trainer, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "test")


def stage_prefixes(stage: str) -> tuple[str, str]:
    """How metric names of a stage begin: `val/acc` here, `val_loss` in Lightning's docs."""
    return f"{stage}/", f"{stage}_"
