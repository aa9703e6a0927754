from project.data.mnist1d import MNIST1DDataModule
from project.data.sequence_files import SequenceFileDataModule
from project.data.sequences import SequenceDataModule
from project.data.signal_frequency import SignalFrequencyDataModule

__all__ = [
    "MNIST1DDataModule",
    "SequenceDataModule",
    "SequenceFileDataModule",
    "SignalFrequencyDataModule",
]
