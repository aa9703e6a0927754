"""The callbacks: what a run does besides its training step. A default run's list is
project/run.yaml (`run_callbacks`, then the `checkpoint:` and `last_checkpoint:` keys; shown by
`--print_config`); the configs' overlays add others (`configs/trainer/*.yaml`)."""

from project.callbacks.backbone_freeze import BackboneFreeze
from project.callbacks.checkpoints import BestAndLastCheckpoint, LastCheckpoint
from project.callbacks.compile_network import CompileNetwork
from project.callbacks.non_finite_loss import StopOnNonFiniteLoss
from project.callbacks.results import RunResults
from project.callbacks.signals import Requeue
from project.callbacks.speedups import GPUSpeedups
from project.callbacks.trial_reporter import TrialReporter

__all__ = [
    # every run (project/run.yaml)
    "BackboneFreeze",
    "BestAndLastCheckpoint",
    "LastCheckpoint",
    "RunResults",
    "StopOnNonFiniteLoss",
    # chosen by a config or a command
    "CompileNetwork",
    "GPUSpeedups",
    "Requeue",
    "TrialReporter",  # added by a search worker (project/search/worker.py)
]
