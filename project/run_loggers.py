"""Lightning's CSV, MLflow and Weights & Biases loggers, each given the run folder a
TensorBoard run has (`<save_dir>/<name>/<version>/`: `config.yaml`, `checkpoints/`,
`metrics.json`), so that run folders, resume and the Slurm path are the same whichever logger
is chosen (`configs/logger/`). The CLI fills `name` (the experiment) and, on Slurm or when a
run is resumed, `version`, as it does for TensorBoard (project/cli/run_folder.py). And the
one path by which figures and hyperparameters reach whichever loggers a run has."""

import os
from pathlib import Path
from typing import Any

import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch.utils.tensorboard.summary import hparams as hparams_summary

from project.loggers import TensorBoardLogger as ProjectTensorBoardLogger
from project.runs import (
    beside_checkpoint,
    claim_version,
    next_version,
    run_folder,
    run_folder_on_rank_zero,
)

# MLflow's tag for a run's name (mlflow.utils.mlflow_tags.MLFLOW_RUN_NAME): spelled here, so
# that this module imports without the optional mlflow package
MLFLOW_RUN_NAME = "mlflow.runName"


class RunFolder:
    """`<save_dir>/<name>/<version>`, with `version_N` claimed on rank 0 as TensorBoard's is
    (project/loggers.py); the other ranks of a DDP run get rank 0's from `trainer.log_dir`."""

    def place_run(self, save_dir: str | Path, name: str | None, version: int | str | None) -> None:
        self.run_root, self.run_name, self.named = Path(save_dir), name or "default", bool(name)
        self.asked_version, self.claimed = version, None

    @property
    def run_folder(self) -> Path:
        if self.claimed is None:
            self.claimed = self.asked_version
            if self.claimed is None:
                experiment = self.run_root / self.run_name
                start = next_version(experiment)
                claims = rank_zero_only.rank == 0
                self.claimed = claim_version(str(experiment), start) if claims else start
        return run_folder(self.run_root, self.run_name, self.claimed)


class CSVLogger(LightningCSVLogger):
    """`metrics.csv` and `hparams.yaml` in the run folder; `version_N` claimed as TensorBoard's."""

    def __init__(self, save_dir: str | Path = "logs", name: str | None = None,
                 version: int | str | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(save_dir, name or "default", version, **kwargs)
        self.asked_version, self.claimed = version, None

    @property
    def version(self) -> int | str:
        if self.claimed is None:
            self.claimed = super().version
            if self.asked_version is None and rank_zero_only.rank == 0:
                self.claimed = claim_version(self.root_dir, int(self.claimed))
        return self.claimed


class MLFlowLogger(RunFolder, LightningMLFlowLogger):
    """An MLflow run in `experiment_name` (default: the experiment's name) at `tracking_uri`
    (a server, or a local database `<save_dir>/mlflow.db`), named after its run folder, which
    holds the checkpoints and `config.yaml` as with any logger. The run's folder and its
    checkpoints are its tags (`run_folder`, `best_checkpoint`, `last_checkpoint`)."""

    def __init__(self, save_dir: str | Path = "logs", name: str | None = None,
                 version: int | str | None = None, experiment_name: str | None = None,
                 tracking_uri: str | None = None, **kwargs: Any) -> None:  # fmt: skip
        self.place_run(save_dir, name, version)
        tracking_uri = tracking_uri or os.getenv("MLFLOW_TRACKING_URI")
        if not tracking_uri:  # MLflow 3 refuses its old file store: a database file instead
            root = Path(save_dir).resolve()
            tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
            if not kwargs.get("artifact_location"):
                kwargs["artifact_location"] = str(root / "mlartifacts")
        super().__init__(experiment_name or self.run_name, tracking_uri=tracking_uri, **kwargs)

    @property
    def save_dir(self) -> str:
        """The run folder: where Lightning puts `trainer.log_dir` for a logger like this one."""
        return str(self.run_folder)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """The checkpoint just saved as a tag, `best_checkpoint` or `last_checkpoint` (its
        absolute path), and the run folder it is in as `run_folder`."""
        super().after_save_checkpoint(checkpoint_callback)
        path = Path(checkpoint_callback.best_model_path or checkpoint_callback.last_model_path)
        if path.name:
            kind = "last" if path.name.startswith("last") else "best"
            self.experiment.set_tag(self.run_id, f"{kind}_checkpoint", str(path.resolve()))
            run = beside_checkpoint(path).resolve()
            self.experiment.set_tag(self.run_id, "run_folder", str(run))
            # its name in MLflow's lists: the experiment and run folder, not a random one
            self.experiment.set_tag(self.run_id, MLFLOW_RUN_NAME, f"{run.parent.name}/{run.name}")


class WandbLogger(RunFolder, LightningWandbLogger):
    """A Weights & Biases run (in `project`, default: the experiment's name) whose files
    (`wandb/offline-run-*` with `offline: true`) are in the run folder."""

    def __init__(self, save_dir: str | Path = "logs", name: str | None = None,
                 version: int | str | None = None, project: str | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self.place_run(save_dir, name, version)
        super().__init__(project=project or self.run_name, save_dir=None, **kwargs)
        self.placed = False

    @property
    def save_dir(self) -> str:
        return str(self.run_folder)

    @property
    def experiment(self) -> Any:
        # wandb.init's folder, once the run folder is claimed; a second logger beside another
        # (no `name` from the CLI) writes into ./wandb
        if not self.placed and self.named:
            os.environ["WANDB_DIR"] = str(self.run_folder)
        self.placed = True
        return super().experiment


def log_image(trainer: Trainer, tag: str, image: torch.Tensor) -> None:
    """Draws a `(3, H, W)` uint8 image into every logger that takes images, at this step: an
    image in TensorBoard, an artifact `<tag>/step_<N>.png` in MLflow, a W&B image; with no
    such logger a file `images/<tag>/step_<N>.png` in the run folder (rank 0)."""
    if not trainer.is_global_zero:
        return
    step = trainer.global_step
    if isinstance(trainer.logger, ProjectTensorBoardLogger):  # evaluations after the curves
        step = trainer.logger.at_step(step)
    pixels = image.permute(1, 2, 0).cpu().numpy()  # (H, W, 3), as MLflow and W&B take it
    name = f"{tag}/step_{step:06d}.png"
    taken = False
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step)
        elif isinstance(logger, LightningMLFlowLogger):
            logger.experiment.log_image(logger.run_id, pixels, artifact_file=name)
        elif isinstance(logger, LightningWandbLogger):
            logger.log_image(key=tag, images=[pixels], step=step)
        else:
            continue
        taken = True
    folder = run_folder_on_rank_zero(trainer)
    if not taken and folder is not None:
        path = folder / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def log_hparams(trainer: Trainer, values: dict[str, Any], metrics: set[str]) -> None:
    """A run's hyperparameters (`model/hidden_size`-style names) into every logger: TensorBoard's
    HParams tab with the `metrics` it tabulates beside them, the others' params or config."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            _, session_start, session_end = hparams_summary(values, dict.fromkeys(metrics, 0.0))
            writer = logger.experiment
            # The session's values only, not torch's experiment record: without one,
            # TensorBoard builds the table from all runs and puts first the hyperparameters that
            # differ between them (with one, it shows its first five by name, for every sweep)
            for record in (session_start, session_end):
                writer.file_writer.add_summary(record)
            writer.flush()
        else:
            logger.log_hyperparams(values)
