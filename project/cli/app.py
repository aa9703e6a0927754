"""`ProjectCLI`: LightningCLI with this project's arguments, defaults and checks; `make_cli`."""

import sys
import time
from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from torch.optim import Optimizer

from project.callbacks.best_and_last import BestAndLastCheckpoint
from project.callbacks.last_checkpoint import LastCheckpoint, resumed_step
from project.callbacks.metrics_file import MetricsFile
from project.callbacks.non_finite_loss import StopOnNonFiniteLoss
from project.callbacks.predictions_file import PredictionsFile
from project.checkpoints import AtomicCheckpointIO
from project.cli.carried_settings import CarriedSettingsNote
from project.cli.errors import ConciseArgumentParser
from project.cli.run_config import RunConfigFile
from project.cli.run_folder import name_experiment, start_run_folder, use_run_folder
from project.cli.setting_checks import check_settings
from project.cli.summary import print_run_summary
from project.errors import UserError
from project.launch_checks import check_launch, run_here
from project.runs import CONFIG, CheckpointReads, other_data_name
from project.search.trial import reporter_from_env

TRAINER_DEFAULTS = {
    # `name` (the experiment) is filled in by ProjectCLI; no placeholder hp_metric: the hparams
    # tab gets the run's real final metrics from MetricsFile
    "logger": {
        "class_path": "project.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "logs", "name": None, "default_hp_metric": False},
    },
    "log_every_n_steps": 10,  # Lightning's 50 draws no curve for a short run
}


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
        evaluating = self.subcommand in ("validate", "test", "predict")
        if evaluating:
            for change in run_here(config.trainer):  # a cluster run's config, on a laptop
                print(f"note: {change}", file=sys.stderr)
        check_launch(config.trainer)  # devices vs this machine, Slurm and torchrun: before any work
        check_settings(config.trainer)  # numbers Lightning takes although they make no sense
        check_learning_rate(config)
        name_experiment(config)
        if self.subcommand == "fit":
            start_run_folder(config)
        if evaluating or config.get("ckpt_path"):
            run = use_run_folder(config, self.subcommand, self.checkpoints)
            if run is not None and self.subcommand != "fit" and (run / CONFIG).is_file():
                self.name_results_on_other_data(run, config)
        self.add_callbacks(config)

    def add_callbacks(self, config: Namespace) -> None:
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

    def name_results_on_other_data(self, run: Path, config: Namespace) -> None:
        """Metrics and predictions of a run on other data than its own (`test -c
        <run>/config.yaml --data.init_args.test other.npz`) go beside the run's, named after
        the data, and never replace the run's own `metrics.json`."""
        dumped = self.parser.dump(self.config, skip_validation=True)  # the whole command's
        data = yaml.safe_load(dumped)[self.subcommand].get("data") or {}
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
        self.checkpoints = CheckpointReads()
        if config.get("ckpt_path"):
            self.checkpoints.check(config.ckpt_path)

    def check_ckpt_path(self) -> dict | None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        checkpoint = self.checkpoints.check(ckpt_path, self.model) if ckpt_path else None
        self.checkpoints = CheckpointReads()  # Lightning reads it again: not kept beside its copy
        return checkpoint

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
    trial = reporter_from_env()  # a search trial (project/search/trial.py): not in its config.yaml
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


def check_learning_rate(config: Namespace) -> None:
    optimizer = config.get("optimizer")
    lr = optimizer.init_args.get("lr") if optimizer and "init_args" in optimizer else None
    if isinstance(lr, int | float) and lr <= 0:
        raise UserError(f"optimizer.init_args.lr must be > 0, got {lr}")
