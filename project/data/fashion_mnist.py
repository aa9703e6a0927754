"""Fashion-MNIST through torchvision: 60000 + 10000 clothing images, 1×28×28, 10 classes."""

from torchvision import datasets
from torchvision.transforms import v2

from project.data.mnist import MNISTDataModule


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST's raw idx files in `<root>/FashionMNIST/raw/` (MNIST's format and sizes)."""

    source = datasets.FashionMNIST
    name = "Fashion-MNIST"
    classes = datasets.FashionMNIST.classes  # "T-shirt/top", "Trouser", …: names in TensorBoard

    def augmentation(self) -> v2.Transform:
        # unlike digits, clothes may be mirrored
        return v2.Compose([v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()])
