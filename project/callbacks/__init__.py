"""The callbacks: what a run does besides its training step. The CLI adds the first group to
every run; the configs' overlays add the others (`configs/trainer/*.yaml`)."""

from project.callbacks.backbone_freeze import BackboneFreeze
from project.callbacks.best_and_last import BestAndLastCheckpoint
from project.callbacks.compile_network import CompileNetwork
from project.callbacks.last_checkpoint import LastCheckpoint
from project.callbacks.metrics_file import MetricsFile
from project.callbacks.non_finite_loss import StopOnNonFiniteLoss
from project.callbacks.predictions_file import PredictionsFile
from project.callbacks.requeue import Requeue
from project.callbacks.speedups import GPUSpeedups

__all__ = [
    # every run
    "BestAndLastCheckpoint",
    "LastCheckpoint",
    "MetricsFile",
    "PredictionsFile",
    "StopOnNonFiniteLoss",
    # chosen by a config
    "BackboneFreeze",
    "CompileNetwork",
    "GPUSpeedups",
    "Requeue",
]
