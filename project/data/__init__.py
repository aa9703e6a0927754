from project.data.cifar10 import CIFAR10DataModule
from project.data.digits import DigitsDataModule
from project.data.fashion_mnist import FashionMNISTDataModule
from project.data.image_folder import ImageFolderDataModule
from project.data.images import ImageDataModule
from project.data.mnist import MNISTDataModule
from project.data.mnist1d import MNIST1DDataModule
from project.data.mnist1d_images import MNIST1DImagesDataModule
from project.data.sequence_files import SequenceFileDataModule
from project.data.sequences import SequenceDataModule
from project.data.signal_frequency import SignalFrequencyDataModule
from project.data.synthetic_images import SyntheticImagesDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "MNIST1DDataModule",
    "MNIST1DImagesDataModule",
    "SequenceDataModule",
    "SequenceFileDataModule",
    "SignalFrequencyDataModule",
    "SyntheticImagesDataModule",
]
