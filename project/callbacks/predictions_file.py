"""`predict` writes `predictions.csv` into the run folder, one row per sample, in dataset order."""

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from project.files import written_whole


class PredictionsFile(BasePredictionWriter):
    """Columns: `index`, then `predicted` and `prob_<class>` (classification) or `value_<k>`;
    a `file` column after `index` when the predicted dataset names its samples (`sample_names`,
    as a folder of images to label does).

    Under DDP each rank writes its share; rank 0 merges them, drops the samples that the
    distributed sampler repeated to even out the ranks, and sorts by index.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        # set by the CLI for other data than the run's: `predictions-<name>.csv`, beside
        self.other_data: str | None = None

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
            self._write_csv(folder / name, rows, task, names)
        trainer.strategy.barrier()

    @staticmethod
    def _write_csv(
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
