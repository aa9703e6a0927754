"""`ProjectCLI`: LightningCLI with this project's arguments, defaults and checks; `make_cli`."""

import sys
import time
from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from torch.optim import Optimizer

from project.callbacks.checkpoints import BestAndLastCheckpoint, LastCheckpoint
from project.callbacks.results import RunResults
from project.checkpoints import AtomicCheckpointIO, CheckpointReads, checkpoint_step
from project.cli.any_module import note_settings_the_model_ignores
from project.cli.carried_settings import NOTES
from project.cli.errors import ConciseArgumentParser
from project.cli.run_config import RunConfigFile
from project.cli.run_folder import name_experiment, start_run_folder, use_run_folder
from project.cli.setting_checks import check_settings
from project.cli.summary import print_run_summary
from project.cli.unused_hooks import skip_unused_hooks
from project.errors import UserError
from project.launch_checks import check_launch, run_here
from project.models.contract import check_init_of
from project.runs import CONFIG, other_data_name

# a default run's callbacks and checkpoint settings, read before any `-c` file
RUN_DEFAULTS = Path(__file__).resolve().parents[1] / "run.yaml"

TRAINER_DEFAULTS = {
    # `name` (the experiment) is filled in by ProjectCLI; no placeholder hp_metric: the hparams
    # tab gets the run's real final metrics from RunResults
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
        # a default run's callbacks: their list and settings are project/run.yaml
        parser.add_argument(
            "--run_callbacks",
            type=list[Callback] | None,
            default=None,
            help="The template's callbacks in every run (project/run.yaml; + adds one).",
        )
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        # not instantiated by the parser: `instantiate_trainer` adds it after the callbacks
        # that must see a step before it is saved (StopOnNonFiniteLoss)
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
        note_settings_the_model_ignores(config)
        # a user's model class against the contract (README: "Add your model, your data")
        check_init_of(config.model.class_path, (config.get("data") or {}).get("class_path"))
        name_experiment(config)
        if self.subcommand == "fit":
            start_run_folder(config)
        if evaluating or config.get("ckpt_path"):
            run = use_run_folder(config, self.subcommand, self.checkpoints)
            if run is not None and self.subcommand != "fit" and (run / CONFIG).is_file():
                self.name_results_on_other_data(run)

    def name_results_on_other_data(self, run: Path) -> None:
        """Metrics and predictions of a run on other data than its own (`test -c
        <run>/config.yaml --data.init_args.test other.npz`) go beside the run's, named after
        the data, and never replace the run's own `metrics.json`."""
        dumped = self.parser.dump(self.config, skip_validation=True)  # the whole command's
        data = yaml.safe_load(dumped)[self.subcommand].get("data") or {}
        self.other_data = other_data_name(run, data)
        if self.other_data is None:
            return
        print(
            f"note: not the data {run} was fit on: results go to *-{self.other_data}.*",
            file=sys.stderr,
        )

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        self.trainer_defaults["callbacks"] = run_callbacks(config)
        trainer = super().instantiate_trainer(**kwargs)
        skip_unused_hooks(trainer.callbacks)  # Lightning's, yours and the template's
        for callback in trainer.callbacks:
            if isinstance(callback, RunResults):
                callback.other_data = getattr(self, "other_data", None)
        # Lightning's writer can truncate a checkpoint when killed (see AtomicCheckpointIO); set
        # here and not in `trainer.plugins`, which an overlay (slurm.yaml) or a flag replaces
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
        self.print_notes()
        return checkpoint

    def print_notes(self) -> None:
        """The settings the command line's class switches kept (`carried_settings.py`), said
        once everything is built, from the first process."""
        if rank_zero_only.rank == 0:
            for note in NOTES:
                print(f"note: {note}", file=sys.stderr)
        NOTES.clear()

    before_validate = before_test = before_predict = check_ckpt_path

    def before_fit(self) -> None:
        checkpoint = self.check_ckpt_path()
        # the summary then says what this process did and what the whole run did
        self.resumed_from = checkpoint_step(checkpoint) if checkpoint else None
        self.fit_started = time.monotonic()
        if self.trainer.is_global_zero:
            # decided now, before `ddp_fork` or `ddp_spawn` start the processes that train: they
            # inherit it, and this one's summary names their run folder (not a new, empty one)
            for logger in self.trainer.loggers:
                _ = logger.version

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

    defaults = {"default_config_files": [str(RUN_DEFAULTS)]}
    subcommands = ("fit", "validate", "test", "predict")
    return cli_class(
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": []},  # run_callbacks()'s, once built
        save_config_callback=RunConfigFile,
        parser_class=ConciseArgumentParser,
        parser_kwargs={name: defaults for name in subcommands} if run else defaults,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def run_callbacks(config: Namespace) -> list[Callback]:
    """The template's callbacks of a run (`run_callbacks`, built), then `LastCheckpoint`.

    Rich's progress bar (in `run_callbacks`) only while the bar is on and no other bar is
    configured: Lightning refuses a bar in the callbacks of a Trainer whose bar is off.
    `LastCheckpoint` last: StopOnNonFiniteLoss stops a NaN step before it can be saved. In every
    subcommand (it acts in fit only): Lightning warns when a checkpoint that holds its state is
    loaded without it."""
    configured = config.trainer.get("callbacks") or []
    configured = configured if isinstance(configured, list) else [configured]
    bar_off = config.trainer.get("enable_progress_bar") is False or any(
        isinstance(callback, ProgressBar) for callback in configured
    )
    ours = [
        c for c in config.get("run_callbacks") or [] if not (bar_off and isinstance(c, ProgressBar))
    ]
    return [*ours, LastCheckpoint(**config.last_checkpoint.as_dict())]


def check_learning_rate(config: Namespace) -> None:
    optimizer = config.get("optimizer")
    lr = optimizer.init_args.get("lr") if optimizer and "init_args" in optimizer else None
    if isinstance(lr, int | float) and lr <= 0:
        raise UserError(f"optimizer.init_args.lr must be > 0, got {lr}")
