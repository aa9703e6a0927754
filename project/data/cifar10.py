"""CIFAR-10: 50000 + 10000 colour images, 3×32×32, 10 classes."""

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from project.data.images import ImageDataModule, labelled_images
from project.errors import UserError

# what a CIFAR batch file may ask the unpickler to build: numpy arrays, nothing else
NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes with protocol 2
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays; any other global is refused before it runs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in NUMPY_ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 3, 32, 32)` and labels of one file of CIFAR-10's python version."""
    try:
        with open(path, "rb") as file:
            # latin1: the files were pickled by Python 2 (as torchvision reads them)
            batch = NumpyOnlyUnpickler(file, encoding="latin1").load()
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as error:
        raise UserError(f"{path} is not a CIFAR-10 batch file ({error})") from None
    return images, labels


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10's python version in `<root>/cifar-10-batches-py/`; validation from train.

    The batch files are pickles: they are read with an unpickler that builds numpy arrays only,
    so a tampered file cannot run code (torchvision trusts them after a checksum, which also
    rejects any other copy of the format). `download: true` fetches them through torchvision.
    """

    # the label names of the archive's batches.meta, in label order (shown in TensorBoard)
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()

    def __init__(
        self,
        *,
        root: str = "data",
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: the folder holding `cifar-10-batches-py/` (torchvision's layout).
            download: fetch and extract the archive when missing (needs network).
        """
        super().__init__(**kwargs)
        self.root = root
        self.download = download
        self.num_outputs = 10
        self.input_size = (3, 32, 32)
        self.folder = Path(root) / CIFAR10.base_folder
        if self.missing() and not download:
            raise UserError(
                f"CIFAR-10 not found: {self.folder} lacks {', '.join(self.missing())}; set"
                f" data.init_args.download true, or extract {CIFAR10.url} into {root}"
            )

    def missing(self) -> list[str]:
        names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
        return [name for name in names if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        if not (self.download and self.missing()):
            return
        try:
            download_and_extract_archive(
                CIFAR10.url, self.root, filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
            )
        except (OSError, RuntimeError) as error:  # no network, or a corrupt download
            one_line = " ".join(str(error).split())
            raise UserError(
                f"could not download CIFAR-10 ({one_line}): extract {CIFAR10.url} into {self.root}"
            ) from None

    def load(self) -> dict[str, TensorDataset]:
        splits = {}
        for split, files in (("train", CIFAR10.train_list), ("test", CIFAR10.test_list)):
            images, labels = zip(
                *(read_batch(self.folder / name) for name, _ in files), strict=True
            )
            splits[split] = labelled_images(
                torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
            )
        return splits

    def augmentation(self) -> v2.Transform:
        return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
