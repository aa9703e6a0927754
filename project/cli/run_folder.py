"""Where a command's run folder is, set in its config before anything is built: the folder
layout itself is project/runs.py's."""

import importlib
import os
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

from project.checkpoints import CheckpointReads, checkpoint_step
from project.errors import UserError
from project.loggers import TensorBoardLogger
from project.run_loggers import RunFolder
from project.runs import (
    CONFIG,
    latest_checkpoint,
    named_checkpoint,
    purge_step,
    run_folder,
    run_of_files,
    slurm_restarts,
    slurm_run_folder,
    step_after_curves,
)

RUN_FOLDER_LOGGERS = (LightningTensorBoardLogger, CSVLogger, RunFolder)


def logger_classes(config: Namespace) -> list[tuple[type, Namespace]]:
    """The configured loggers' classes (resolved, not their names matched) and arguments."""
    loggers = config.trainer.logger
    found = []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and logger.get("class_path"):
            module, _, name = str(logger.class_path).rpartition(".")
            found.append((getattr(importlib.import_module(module), name), logger.init_args))
    return found


def run_folder_args(config: Namespace) -> Namespace | None:
    """The arguments of the run's first logger when it keeps its run in
    `<save_dir>/<name>/<version>` (TensorBoard, CSV, and the MLflow and W&B loggers of
    project/run_loggers.py), None for another (or none): the run folder is then Lightning's."""
    loggers = logger_classes(config)
    if loggers and issubclass(loggers[0][0], RUN_FOLDER_LOGGERS):
        return loggers[0][1]
    return None


def ours(config: Namespace) -> bool:
    """Whether the logger is project.loggers.TensorBoardLogger (curves that start at a step)."""
    loggers = logger_classes(config)
    return bool(loggers) and issubclass(loggers[0][0], TensorBoardLogger)


def name_experiment(config: Namespace) -> None:
    """The experiment (the folder under logs/): `--experiment`, else the first config's name."""
    logger = run_folder_args(config)
    files = config.get("config") or []
    name = config.experiment or (Path(str(files[0])).stem if files else "default")
    if logger is not None and (config.experiment or logger.get("name") is None):
        logger.name = name
    for logger_class, args in logger_classes(config)[1:]:  # MLflow beside TensorBoard
        if issubclass(logger_class, MLFlowLogger) and args.get("experiment_name") is None:
            args.experiment_name = logger.name if logger is not None else name


def start_run_folder(config: Namespace) -> None:
    """A `fit`'s folder: a Slurm job's own (`use_slurm_run_folder`), and where its curves start."""
    logger = run_folder_args(config)
    if logger is None:
        return
    if not config.get("ckpt_path"):
        use_slurm_run_folder(config)
    if ours(config):  # a resumed run's own step: `use_run_folder`
        run = run_folder(str(logger.save_dir), logger.name, logger.version)
        logger.purge_step = purge_step(run)


def use_slurm_run_folder(config: Namespace) -> None:
    """In a Slurm job, the run is `logs/<experiment>/slurm-<job>/`, also Lightning's
    `default_root_dir` (where it looks for `hpc_ckpt_*.ckpt` to resume): a requeued job
    continues its own run there, any other job starts a new one (project/runs.py)."""
    logger = run_folder_args(config)
    if logger.get("version") is not None:  # the user named the folder
        return
    run = slurm_run_folder(Path(str(logger.save_dir), logger.name))
    if run is None:
        return
    logger.version = run.name
    config.trainer.default_root_dir = str(run)
    checkpoint = latest_checkpoint(run) if slurm_restarts() > 0 else None
    if checkpoint is not None:
        config.ckpt_path = str(checkpoint)  # `use_run_folder` continues the run from it
    if int(os.environ.get("SLURM_PROCID", 0)) == 0:
        state = (
            f"requeued (restart {slurm_restarts()}), resuming from {checkpoint}"
            if checkpoint
            else "a new run, from step 0"
        )
        print(f"run folder: {run} ({state})", file=sys.stderr, flush=True)


def use_run_folder(
    config: Namespace, subcommand: str | None, checkpoints: CheckpointReads
) -> Path | None:
    """Evaluating a run's own `config.yaml` or one of its checkpoints, or resuming it (`fit`
    with a `--ckpt_path`), logs into that run's folder, which it returns: its TensorBoard curves
    continue there, and `predict` writes its `predictions.csv` there.

    `--ckpt_path best` (or `last`) then names that run's best checkpoint (or the newest it can
    resume from).
    """
    files = [Path(str(f)) for f in config.get("config") or []]
    run = run_of_files(files, Path(str(config.ckpt_path)))
    if run is None:
        if config.ckpt_path in ("best", "last"):
            started = [f.parent for f in files if f.name == CONFIG]
            raise UserError(
                f"{started[0]} holds no checkpoint yet: start it again without --ckpt_path"
                if started
                else f"--ckpt_path {config.ckpt_path} needs a run's config: "
                "-c logs/<experiment>/version_N/config.yaml"
            )
        return None
    if config.ckpt_path in ("best", "last"):
        config.ckpt_path = str(named_checkpoint(run, config.ckpt_path))
    logger = run_folder_args(config)
    if logger is None:
        return run
    # the config's own spelling of the folder when it is the same one: checkpoints hold it, and
    # ModelCheckpoint restores its state only for the folder it saved it from
    if Path(str(logger.save_dir)).resolve() != run.parent.parent.resolve():
        logger.save_dir = str(run.parent.parent)
    logger.name = run.parent.name
    logger.version = run.name
    config.trainer.default_root_dir = str(run)  # a requeue saves hpc_ckpt_N.ckpt there
    if ours(config):
        # a file: Lightning's keywords (`hpc`) name none yet; validate and friends log beside
        # the training curves, after them (`TensorBoardLogger.at_step`)
        resumed = subcommand == "fit" and Path(str(config.ckpt_path)).is_file()
        # checked by `ProjectCLI.parse_arguments` (or this job's own, atomically written requeue
        # checkpoint), and read once for the model's check too
        logger.purge_step = (
            checkpoint_step(checkpoints.check(config.ckpt_path)) if resumed else None
        )
        if subcommand != "fit":
            logger.first_step = step_after_curves(run)
    return run


def without_run_identity(config: Namespace) -> Namespace:
    """The config as `config.yaml` keeps it: without what names this run's folder (its version,
    `default_root_dir`, where its curves start), which the CLI chooses anew for every run. So
    `fit -c <run>/config.yaml` starts a new run, on a laptop or in another Slurm job, instead of
    writing into the old run's folder (and, on Slurm, resuming its requeue checkpoint)."""
    config = config.clone()
    config.trainer.default_root_dir = None
    logger = run_folder_args(config)
    if logger is not None:
        logger.version = None
        for key in ("purge_step", "first_step"):
            if key in logger:
                logger[key] = None
    return config
