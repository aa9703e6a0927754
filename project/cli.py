"""The command line: `python -m project {fit,validate,test,predict,tune} -c configs/<exp>.yaml`."""

import logging
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import yaml
from jsonargparse import Namespace
from lightning import LightningModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from torch.optim import Optimizer

from project.callbacks import MetricsFile, StopOnNonFiniteLoss
from project.carried_settings import CarriedSettingsNote
from project.checkpoints import (
    AtomicCheckpointIO,
    BestAndLastCheckpoint,
    check_checkpoint,
)
from project.cli_errors import ConciseArgumentParser
from project.errors import UserError
from project.launch_checks import check_launch, default_threads, run_here
from project.lightning_noise import ignore_lightning_noise
from project.predictions import PredictionsFile
from project.provenance import save_provenance
from project.resume import LastCheckpoint, resumed_step
from project.runs import (
    checkpoint_step,
    latest_checkpoint,
    other_data_name,
    run_of_checkpoint,
    slurm_restarts,
    slurm_run_folder,
    step_after_curves,
)
from project.setting_checks import check_settings
from project.summary import print_run_summary
from project.trial import reporter_from_env

TRAINER_DEFAULTS = {
    # `name` (the experiment) is filled in by ProjectCLI; no placeholder hp_metric: the hparams
    # tab gets the run's real final metrics from MetricsFile
    "logger": {
        "class_path": "project.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "logs", "name": None, "default_hp_metric": False},
    },
    "log_every_n_steps": 10,  # Lightning's 50 draws no curve for a short run
}


class RunConfigFile(SaveConfigCallback):
    """Saves `config.yaml` when a run is fitted, and shows it in TensorBoard's text tab.

    `validate`/`test`/`predict` of an existing run log into that run's folder (see
    `ProjectCLI.use_run_folder`), so they must not replace the config that trained it.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # a run resumed in its own folder (`fit -c <run>/config.yaml --ckpt_path last`) keeps
        # the config and the config text it was started with
        ckpt_path = self.config.get("ckpt_path")
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        resumed = (
            ckpt_path and log_dir and Path(log_dir).resolve() in Path(ckpt_path).resolve().parents
        )
        if stage == "fit" and not resumed:
            self.config = without_run_identity(self.config)
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        save_provenance(trainer)  # provenance.json beside config.yaml, and in the text tab
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = self.parser.dump(self.config, skip_unset=False)
            # four leading spaces: TensorBoard renders the text as markdown, this keeps it verbatim
            experiment.add_text("config", "    " + text.replace("\n", "\n    "))


def without_run_identity(config: Namespace) -> Namespace:
    """The config as `config.yaml` keeps it: without what names this run's folder (its version,
    `default_root_dir`, where its curves start), which the CLI chooses anew for every run. So
    `fit -c <run>/config.yaml` starts a new run, on a laptop or in another Slurm job, instead of
    writing into the old run's folder (and, on Slurm, resuming its requeue checkpoint)."""
    config = config.clone()
    config.trainer.default_root_dir = None
    logger = config.trainer.get("logger")
    if hasattr(logger, "init_args") and "TensorBoardLogger" in str(logger.get("class_path")):
        logger.init_args.version = None
        for key in ("purge_step", "first_step"):
            if key in logger.init_args:
                logger.init_args[key] = None
    return config


class ProjectCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="Run folder name under logs/ (default: the first config file's name).",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, validate and test the best checkpoint (what `make train` does).",
        )
        # the top-level `optimizer:` / `lr_scheduler:` keys go to the model, which builds its
        # own parameter groups (a head and a backbone learning rate for image models)
        parser.add_optimizer_args((Optimizer,), link_to="model.init_args.optimizer")
        parser.add_lr_scheduler_args(link_to="model.init_args.lr_scheduler")
        # facts of the data that the model must agree with
        for fact in ("num_outputs", "task", "input_size"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch={epoch}-step={step}",
                "checkpoint.auto_insert_metric_name": False,
                # a resumed run saves over its own last.ckpt instead of adding last-v1.ckpt
                "checkpoint.enable_version_counter": False,
            }
        )
        # not instantiated by the parser: `before_instantiate_classes` adds it after the
        # callbacks that must see a step before it is saved (StopOnNonFiniteLoss)
        parser.add_class_arguments(LastCheckpoint, "last_checkpoint", instantiate=False)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("validate", "test", "predict"):
            for change in run_here(config.trainer):  # a cluster run's config, on a laptop
                print(f"note: {change}", file=sys.stderr)
        check_launch(config.trainer)  # devices vs this machine, Slurm and torchrun: before any work
        check_settings(config.trainer)  # numbers Lightning takes although they make no sense
        optimizer = config.get("optimizer")
        lr = optimizer.init_args.get("lr") if optimizer and "init_args" in optimizer else None
        if isinstance(lr, int | float) and lr <= 0:
            raise UserError(f"optimizer.init_args.lr must be > 0, got {lr}")
        logger = config.trainer.logger
        if hasattr(logger, "init_args") and "TensorBoardLogger" in logger.class_path:
            if config.experiment or logger.init_args.get("name") is None:
                files = config.get("config") or []
                first = Path(str(files[0])).stem if files else "default"
                logger.init_args.name = config.experiment or first
            if self.subcommand == "fit" and not config.get("ckpt_path"):
                self.use_slurm_run_folder(config)
            if (
                self.subcommand == "fit"
                and logger.class_path == "project.loggers.TensorBoardLogger"
            ):
                # the mark TensorBoard ignores, in a new folder; none in a folder that has curves
                # (a requeued Slurm job's), where a mark at 0 would hide them all. A resumed
                # run's own step: `use_run_folder`
                version = logger.init_args.get("version")
                version = version if isinstance(version, str) else f"version_{version}"
                folder = Path(str(logger.init_args.save_dir), logger.init_args.name, version)
                has_curves = any(folder.glob("events.out.tfevents.*"))
                logger.init_args.purge_step = None if has_curves else 0
        if self.subcommand in ("validate", "test", "predict") or config.get("ckpt_path"):
            self.use_run_folder(config)
        configured = [getattr(c, "class_path", "") for c in config.trainer.callbacks or []]
        if config.trainer.enable_progress_bar is not False and not any(
            "ProgressBar" in c for c in configured
        ):
            # Rich's bar when the bar is on (a bar in the callbacks while it is off is an error)
            self.trainer_defaults["callbacks"].append(RichProgressBar())
        # last in the list: StopOnNonFiniteLoss stops a NaN step before it can be saved. In every
        # subcommand (it acts in fit only): Lightning warns when a checkpoint that holds its state
        # is loaded without it
        last = LastCheckpoint(**config.last_checkpoint.as_dict())
        self.trainer_defaults["callbacks"].append(last)

    def use_slurm_run_folder(self, config) -> None:  # noqa: ANN001 (a jsonargparse Namespace)
        """In a Slurm job, the run is `logs/<experiment>/slurm-<job>/`, also Lightning's
        `default_root_dir` (where it looks for `hpc_ckpt_*.ckpt` to resume): a requeued job
        continues its own run there, any other job starts a new one (project/runs.py)."""
        logger = config.trainer.logger
        if logger.init_args.get("version") is not None:  # the user named the folder
            return
        experiment = Path(str(logger.init_args.save_dir), logger.init_args.name)
        run = slurm_run_folder(experiment)
        if run is None:
            return
        logger.init_args.version = run.name
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

    def use_run_folder(self, config) -> None:  # noqa: ANN001 (a jsonargparse Namespace)
        """Evaluating a run's own `config.yaml` or one of its checkpoints, or resuming it (`fit`
        with a `--ckpt_path`), logs into that run's folder: its TensorBoard curves continue
        there, and `predict` writes its `predictions.csv` there.

        `--ckpt_path best` (or `last`) then names that run's best checkpoint (or the newest it can
        resume from).
        """
        files = [Path(str(f)) for f in config.get("config") or []]
        runs = [f.parent for f in files if (f.parent / "checkpoints").is_dir()]
        of_checkpoint = run_of_checkpoint(Path(str(config.ckpt_path)))
        if of_checkpoint is not None:
            runs = runs or [of_checkpoint]  # a checkpoint of a run, with another config
        if not runs:
            if config.ckpt_path in ("best", "last"):
                started = [f.parent for f in files if f.name == "config.yaml"]
                raise UserError(
                    f"{started[0]} holds no checkpoint yet: start it again without --ckpt_path"
                    if started
                    else f"--ckpt_path {config.ckpt_path} needs a run's config: "
                    "-c logs/<experiment>/version_N/config.yaml"
                )
            return
        run = runs[0]
        if config.ckpt_path == "last":
            latest = latest_checkpoint(run)
            if latest is None:
                raise UserError(f"{run / 'checkpoints'} holds no last.ckpt")
            config.ckpt_path = str(latest)
        elif config.ckpt_path == "best":
            best = sorted((run / "checkpoints").glob("best*.ckpt"))
            if not best:
                raise UserError(f"{run / 'checkpoints'} holds no best*.ckpt")
            config.ckpt_path = str(best[-1])
        logger = config.trainer.logger
        if hasattr(logger, "init_args") and "TensorBoardLogger" in logger.class_path:
            # the config's own spelling of the folder when it is the same one: checkpoints hold
            # it, and ModelCheckpoint restores its state only for the folder it saved it from
            if Path(str(logger.init_args.save_dir)).resolve() != run.parent.parent.resolve():
                logger.init_args.save_dir = str(run.parent.parent)
            logger.init_args.name = run.parent.name
            logger.init_args.version = run.name
            config.trainer.default_root_dir = str(run)  # a requeue saves hpc_ckpt_N.ckpt there
            if logger.class_path == "project.loggers.TensorBoardLogger":
                # a file: Lightning's keywords (`hpc`) name none yet; validate and friends log
                # beside the training curves, after them (`TensorBoardLogger.at_step`)
                resumed = self.subcommand == "fit" and Path(str(config.ckpt_path)).is_file()
                # checked by `parse_arguments` (or this job's own, atomically written requeue
                # checkpoint): its step alone is read here
                step = checkpoint_step(Path(str(config.ckpt_path))) if resumed else None
                logger.init_args.purge_step = step
                if self.subcommand != "fit":
                    logger.init_args.first_step = step_after_curves(run)
        if self.subcommand != "fit" and (run / "config.yaml").is_file():
            self.name_results_on_other_data(run, config)

    def name_results_on_other_data(self, run: Path, config: Namespace) -> None:
        """Metrics and predictions of a run on other data than its own (`test -c
        <run>/config.yaml --data.init_args.test other.npz`) go beside the run's, named after
        the data, and never replace the run's own `metrics.json`."""
        dumped = self._parser(self.subcommand).dump(config, skip_validation=True)
        data = yaml.safe_load(dumped).get("data") or {}
        name = other_data_name(run, data)
        if name is None:
            return
        for callback in self.trainer_defaults["callbacks"]:
            if isinstance(callback, MetricsFile | PredictionsFile):
                callback.other_data = name
        print(f"note: not the data {run} was fit on: results go to *-{name}.*", file=sys.stderr)

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning's writer can truncate a checkpoint when killed (see AtomicCheckpointIO); set
        # here and not in `trainer.plugins`, which an overlay (slurm.yaml) or a flag replaces
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        plugins = config.trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        chosen = any(isinstance(plugin, CheckpointIO) for plugin in plugins)
        if not chosen and type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: object) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint's hyperparameters right after parsing: check the
        # file first, so a missing, corrupt or code-carrying one is a one-line error
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        if config.get("ckpt_path"):
            check_checkpoint(config.ckpt_path)

    def check_ckpt_path(self) -> dict | None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        return check_checkpoint(ckpt_path, self.model) if ckpt_path else None

    before_validate = before_test = before_predict = check_ckpt_path

    def before_fit(self) -> None:
        checkpoint = self.check_ckpt_path()
        # the summary then says what this process did and what the whole run did
        self.resumed_from = resumed_step(checkpoint) if checkpoint else None
        self.fit_started = time.monotonic()

    def after_fit(self) -> None:
        best = self.trainer.checkpoint_callback
        if self.config.fit.test_after_fit:
            ckpt_path = "best" if best is not None and best.best_model_path else None
            self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        if self.trainer.is_global_zero:
            print_run_summary(self.trainer, time.monotonic() - self.fit_started, self.resumed_from)


def make_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type[ProjectCLI] = ProjectCLI
) -> ProjectCLI:
    """The CLI as `python -m project` builds it; `run=False` only instantiates (benchmarks,
    `tune`)."""
    # imported here so that the class_path names in configs resolve to these classes
    import project.data  # noqa: F401
    import project.models  # noqa: F401

    callbacks = [
        MetricsFile(),
        PredictionsFile(),
        LearningRateMonitor(),
        StopOnNonFiniteLoss(),
        CarriedSettingsNote(),
    ]
    trial = reporter_from_env()  # a search trial (project/trial.py): not in its config.yaml
    return cli_class(
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": callbacks + ([trial] if trial else [])},
        save_config_callback=RunConfigFile,
        parser_class=ConciseArgumentParser,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    # "Seed set to N" would precede every one-line error; the seed is in the saved config.yaml
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    ignore_lightning_noise()
    warnings.formatwarning = one_line_for_ours
    default_threads()
    try:
        words = sys.argv[1:] if args is None else args
        if words[:1] == ["tune"]:  # Lightning's finders: not a Trainer method LightningCLI runs
            from project.tune import tune

            tune(words[1:])
        else:
            make_cli(args)
    except Exception as error:
        cause = user_error_in(error)
        if cause is None:
            raise
        print(f"error: {' '.join(str(cause).split())}", file=sys.stderr)  # one line
        sys.exit(2)
    # Lightning destroys only NCCL process groups at exit; a gloo group left to interpreter
    # shutdown can abort the process after a finished run ("terminate called without an
    # active exception", pytorch/pytorch#190489). Only after success: on an error the other
    # ranks may never join the collective destroy.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


PACKAGE = Path(__file__).resolve().parent
PYTHON_FORMAT = warnings.formatwarning


def one_line_for_ours(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """This project's own warnings (e.g. data that looks zero-padded) as one line: Python would
    add the source line that raised it, which tells a user nothing."""
    if Path(filename).resolve().is_relative_to(PACKAGE):
        return f"warning: {message}\n"
    return PYTHON_FORMAT(message, category, filename, lineno, line)


def user_error_in(error: BaseException | None) -> BaseException | None:
    """The mistake behind `error`, if a user's: our `UserError`, Lightning's own verdict on a
    Trainer setting (`MisconfigurationException`), or a setting whose optional package is not
    installed (Lightning's "Requirement 'x' not met. HINT: …"). jsonargparse wraps what classes
    raise in `__init__`, so the whole chain is searched."""
    while error is not None and not is_user_error(error):
        error = error.__cause__ or error.__context__
    return error


def is_user_error(error: BaseException) -> bool:
    if isinstance(error, ModuleNotFoundError):
        return str(error).startswith("Requirement '")
    return isinstance(error, UserError | MisconfigurationException)
