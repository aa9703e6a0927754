"""`RunResults`: what a run leaves for a person to read, in its run folder and its loggers.

- `metrics.json`: the latest val and test metrics, one flat JSON object; the same metrics beside
  the run's hyperparameters in TensorBoard's hparams tab (and `hparams.yaml`).
- `predictions.csv`: one row per sample of `predict` (and of `test` with a prediction step),
  in dataset order.
- figures: the confusion matrix and, for images, a grid of sample predictions, drawn into the
  run's loggers at the end of each validation and test (project/figures.py draws them).

One callback, not three: Lightning calls each callback at every step's hooks it implements
(project/cli/unused_hooks.py skips the rest), each call a few microseconds of a small model's
step (scripts/bench/step_costs.py).
"""

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from project.callbacks.trial_reporter import TrialReporter
from project.figures import draw_confusion, draw_predictions
from project.files import written_whole
from project.hparams import run_hparams, tab_values
from project.run_loggers import log_hparams
from project.runs import CONFIG, METRICS, run_folder_on_rank_zero


class RunResults(BasePredictionWriter):
    """Writes `metrics.json` after fit (the last validation), after `validate` and after `test`:
    later values replace earlier ones under the same name, so after `make train` it holds the best
    checkpoint's val and test metrics. `predictions.csv` has the columns `index`, then `predicted`
    and `prob_<class>` (classification) or `value_<k>`, and `file` after `index` when the
    predicted dataset names its samples (`sample_names`, as a folder of images to label does);
    under DDP each rank writes its share and rank 0 merges them, without the samples that the
    distributed sampler repeated to even out the ranks.

    Figures: the confusion matrix a model accumulates in `confusion` (classification) and, with
    `predictions`, the split's first images with their predicted and true labels (the same
    images at every validation, so a run's grids show what it learned when); by default when the
    inputs are images (a batch whose first tensor has 4 dimensions) of a model of this template.
    """

    def __init__(self, predictions: bool | None = None) -> None:
        """
        Args:
            predictions: draw the grid of sample predictions (None: for images).
        """
        super().__init__(write_interval="epoch")
        self.predictions = predictions
        # set by the CLI when a run is evaluated on other data than its own: the results go to
        # `metrics-<name>.json` and `predictions-<name>.csv` beside the run's own
        self.other_data: str | None = None
        self.hparams_pending = False  # another LightningModule's, written once it has logged

    # metrics.json and the hparams tab

    def write_metrics(self, trainer: Trainer, stage: str) -> None:
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

    def write_hparams(self, trainer: Trainer, names: set[str]) -> None:
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
        with written_whole(log_dir / "hparams.yaml") as file:
            file.write(yaml.safe_dump(hparams, sort_keys=False))
        values = tab_values(hparams)
        for callback in trainer.callbacks:  # a search trial's study and number
            if isinstance(callback, TrialReporter):
                values |= callback.hparams()
        log_hparams(trainer, values, names)

    def write_pending_hparams(self, trainer: Trainer) -> None:
        """Another LightningModule's hparams record, with the val metrics it logged (and their
        test names, for a later `test`)."""
        if self.hparams_pending and not trainer.sanity_checking:
            logged = [k for k in trainer.callback_metrics if k.startswith(stage_prefixes("val"))]
            self.write_hparams(trainer, {*logged, *("test" + k[3:] for k in logged)})

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a module of this template names its metrics; any other LightningModule's are known
        # once it has logged them, after its first validation
        names = getattr(pl_module, "metric_names", None)
        self.hparams_pending = True
        if names is not None:
            tags = {f"{stage}/{name}" for stage in ("val", "test") for name in names}
            self.write_hparams(trainer, tags | {f"val/{pl_module.headline}_best"})

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write_pending_hparams(trainer)
        self.write_metrics(trainer, "val")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.training:
            self.write_pending_hparams(trainer)
        elif trainer.state.fn == "validate":
            self.write_metrics(trainer, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write_metrics(trainer, "test")

    # figures

    def draws_predictions(self, pl_module: LightningModule, batch: tuple) -> bool:
        if self.predictions is not None:
            return self.predictions
        images = isinstance(batch, list | tuple) and getattr(batch[0], "ndim", 0) == 4
        return images and hasattr(pl_module, "task")  # labelled as this template's models do

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: tuple,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        drawn = batch_idx == 0 and not trainer.sanity_checking
        if drawn and self.draws_predictions(pl_module, batch):
            draw_predictions(trainer, pl_module, batch, "val")

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: tuple,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if batch_idx == 0 and self.draws_predictions(pl_module, batch):
            draw_predictions(trainer, pl_module, batch, "test")

    # Lightning calls these before the model's own hooks, which log the epoch's metrics (and,
    # while sanity checking, reset the confusion matrix undrawn)
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            draw_confusion(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        draw_confusion(trainer, pl_module, "test")

    # predictions.csv

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if not all(isinstance(p, torch.Tensor) for p in predictions):
            if trainer.is_global_zero:  # another LightningModule's `predict_step` output
                print("note: no predictions.csv: predict_step returned no tensors (its output is "
                      "what trainer.predict returns)", file=sys.stderr)  # fmt: skip
            return
        outputs = torch.cat([p.float().cpu().reshape(len(p), -1) for p in predictions])
        indices = torch.tensor([i for batch in batch_indices[0] for i in batch]).reshape(-1)
        # the evaluated run's (project/cli/run_folder.py); every rank asks: a DDP broadcast
        folder = Path(trainer.log_dir or ".")
        part = folder / f".predictions.rank{trainer.global_rank}.pt"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"indices": indices, "outputs": outputs}, part)
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            parts = [folder / f".predictions.rank{r}.pt" for r in range(trainer.world_size)]
            rows: dict[int, list[float]] = {}
            for path in parts:
                shard = torch.load(path, weights_only=True)
                for index, values in zip(
                    shard["indices"].tolist(), shard["outputs"].tolist(), strict=True
                ):
                    rows.setdefault(index, values if isinstance(values, list) else [values])
                path.unlink()
            loaders = trainer.predict_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
            names = getattr(getattr(loader, "dataset", None), "sample_names", None)
            name = f"predictions-{self.other_data}.csv" if self.other_data else "predictions.csv"
            # another LightningModule's outputs: values as they are, one column each
            task = getattr(pl_module, "task", "regression")
            write_predictions_csv(folder / name, rows, task, names)
        trainer.strategy.barrier()


def write_predictions_csv(
    path: Path, rows: dict[int, list[float]], task: str, names: Sequence[str] | None = None
) -> None:
    width = len(next(iter(rows.values())))
    if task == "classification":
        header = ["index", "predicted", *(f"prob_{k}" for k in range(width))]
    else:
        header = ["index", *(f"value_{k}" for k in range(width))]
    if names is not None:
        header.insert(1, "file")
    with written_whole(path, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for index in sorted(rows):
            values = rows[index]
            predicted = (
                [max(range(width), key=values.__getitem__)] if task == "classification" else []
            )
            file_name = [] if names is None else [names[index]]
            writer.writerow([index, *file_name, *predicted, *(f"{v:.6g}" for v in values)])


def hparams_of(trainer: Trainer, log_dir: Path) -> dict[str, Any]:
    """The run's hyperparameters (`project.hparams`): from the `config.yaml` in `log_dir` it was
    started with, or, for a Trainer built without the CLI, the model's and data's own."""
    config = log_dir / CONFIG
    if config.is_file():
        return run_hparams(yaml.safe_load(config.read_text()))
    hparams = {"model": {k: v for k, v in trainer.lightning_module.hparams.items() if k[0] != "_"}}
    if trainer.datamodule is not None:
        hparams["data"] = dict(trainer.datamodule.hparams)
    return hparams


def stage_prefixes(stage: str) -> tuple[str, str]:
    """How metric names of a stage begin: `val/acc` here, `val_loss` in Lightning's docs."""
    return f"{stage}/", f"{stage}_"
