"""MNIST through torchvision: 60000 + 10000 handwritten digits, 1×28×28."""

import gzip
import struct
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets
from torchvision.transforms import v2

from project.data.images import ImageDataModule, labelled_images
from project.errors import UserError


def read_idx(path: Path) -> torch.Tensor:
    """The bytes of an idx file (MNIST's format: magic 0x0000 08 <ndim>, each dimension as a
    big-endian int32, the values), or of `<path>.gz` when only that is there, as published.

    Read in memory rather than unpacked beside it: the data folder may be read-only or shared.
    """
    if not path.is_file():
        path = path.with_name(path.name + ".gz")
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as file:
            data = file.read()
        ndim = data[3]
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        if data[:3] != b"\0\0\x08":
            raise ValueError("not unsigned bytes")
        return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).view(shape)
    except (OSError, EOFError, IndexError, ValueError, RuntimeError, struct.error):
        raise UserError(f"{path} is not an idx file of bytes (corrupt or truncated?)") from None


class MNISTDataModule(ImageDataModule):
    """MNIST's raw idx files in `<root>/MNIST/raw/`, uncompressed or `.gz` as published;
    validation from train.

    With `download: true` torchvision fetches them (checking their checksums) when missing.
    """

    source: type[datasets.MNIST] = datasets.MNIST
    name = "MNIST"

    def __init__(
        self,
        *,
        root: str = "data",
        download: bool = False,
        val_fraction: float = 1 / 12,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: the folder holding `MNIST/raw/` (torchvision's layout).
            download: fetch the files when missing (needs network).
        """
        super().__init__(val_fraction=val_fraction, **kwargs)
        self.root = root
        self.download = download
        self.num_outputs = 10
        self.input_size = (1, 28, 28)
        self.raw = Path(root) / self.source.__name__ / "raw"
        files = [Path(url).name.removesuffix(".gz") for url, _ in self.source.resources]
        missing = [
            name
            for name in files
            if not (self.raw / name).is_file() and not (self.raw / f"{name}.gz").is_file()
        ]
        if missing and not download:
            raise UserError(
                f"{self.name} not found: {self.raw} lacks {', '.join(missing)}; set"
                " data.init_args.download true, or put the idx files (.gz or not) there"
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
                f"could not download {self.name} ({one_line}): put its idx files (.gz or not)"
                f" in {self.raw}"
            ) from None

    def load(self) -> dict[str, TensorDataset]:
        # read here, not by torchvision's dataset class, which takes only uncompressed files
        splits = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_idx(self.raw / f"{prefix}-images-idx3-ubyte")
            labels = read_idx(self.raw / f"{prefix}-labels-idx1-ubyte")
            if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
                raise UserError(
                    f"{self.raw}: {prefix} images {tuple(images.shape)} and labels "
                    f"{tuple(labels.shape)} do not match (expected (N, 28, 28) and (N,))"
                )
            splits[split] = labelled_images(images, labels)
        return splits

    def augmentation(self) -> v2.Transform:
        return v2.RandomCrop(28, padding=2)  # shifts of up to 2 pixels
