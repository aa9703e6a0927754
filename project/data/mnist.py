"""MNIST through torchvision: 60000 + 10000 handwritten digits, 1×28×28."""

from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets
from torchvision.transforms import v2

from project.data.images import ImageDataModule, labelled_images
from project.errors import UserError


class MNISTDataModule(ImageDataModule):
    """MNIST's raw idx files in `<root>/MNIST/raw/`, read by torchvision; validation from train.

    With `download: true` torchvision fetches them (checking their checksums) when missing.
    """

    source: type[datasets.MNIST] = datasets.MNIST
    name = "MNIST"

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        augment: bool = True,
        val_fraction: float = 1 / 12,
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        """
        Args:
            root: the folder holding `MNIST/raw/` (torchvision's layout).
            download: fetch the files when missing (needs network).
        """
        super().__init__(
            batch_size,
            augment,
            val_fraction,
            split_seed,
            num_workers,
            pin_memory,
            persistent_workers,
        )
        self.root = root
        self.download = download
        self.num_outputs = 10
        self.input_size = (1, 28, 28)
        raw = Path(root) / self.source.__name__ / "raw"
        # torchvision reads the uncompressed files; the .gz names are where it downloads from
        files = [Path(url).name.removesuffix(".gz") for url, _ in self.source.resources]
        missing = [name for name in files if not (raw / name).is_file()]
        if missing and not download:
            raise UserError(
                f"{self.name} not found: {raw} lacks {', '.join(missing)}; set"
                " data.init_args.download true, or put the uncompressed idx files there"
            )

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:  # one process per machine; a no-op when the files are there
            for train in (True, False):
                self.source(self.root, train=train, download=True)
        except (OSError, RuntimeError) as error:  # no network: torchvision tried every mirror
            one_line = " ".join(str(error).split())  # torchvision lists each mirror on a line
            raise UserError(
                f"could not download {self.name} ({one_line}): put its idx files, uncompressed,"
                f" in {Path(self.root) / self.source.__name__ / 'raw'}"
            ) from None

    def load(self) -> dict[str, TensorDataset]:
        splits = {}
        for split, train in (("train", True), ("test", False)):
            dataset = self.source(self.root, train=train)
            splits[split] = labelled_images(dataset.data, torch.as_tensor(dataset.targets))
        return splits

    def augmentation(self) -> v2.Transform:
        return v2.RandomCrop(28, padding=2)  # shifts of up to 2 pixels
