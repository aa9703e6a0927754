"""Image datasets and weight files written in their real on-disk formats, for offline tests."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights, resnet18


def write_cifar10(root: Path, per_file: int = 4, seed: int = 0) -> Path:
    """`root/cifar-10-batches-py/` as the python version of CIFAR-10 lays it out.

    Each batch is a protocol-2 pickle of a dict: `data` (N × 3072 uint8, the red plane, then
    green, then blue, each row by row), `labels` (Python ints), `batch_label`, `filenames`.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": f"{name} of 6",
            "labels": [int(label) for label in rng.integers(0, 10, per_file)],
            "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            "filenames": [f"image_{i}.png" for i in range(per_file)],
        }
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [f"class_{i}" for i in range(10)]}, file, protocol=2)
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx-ubyte file: magic 0x0000 08 <ndim>, each dimension as a big-endian int32, bytes;
    gzipped when `path` ends in `.gz`, as the MNIST family is published."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(
    root: Path, folder: str = "MNIST", train: int = 8, test: int = 4, gzipped: bool = False
) -> Path:
    """`root/<folder>/raw/` with MNIST's four idx files (Fashion-MNIST's too), uncompressed or,
    with `gzipped`, only the `.gz` files as downloaded."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gzipped else ""
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28))
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 10)
    return root


def write_image_folder(
    root: Path, classes: dict[str, int], size: tuple[int, int] = (40, 30)
) -> Path:
    """`root/<class>/<i>.png`: RGB images of each class's own colour, sizes (w, h) varying."""
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            colour = (80 * index % 256, 255 - 60 * index % 256, 30 * i % 256)
            Image.new("RGB", (size[0] + i, size[1]), colour).save(root / name / f"{i}.png")
    return root


def cache_resnet18_imagenet_weights(torch_home: Path) -> dict[str, torch.Tensor]:
    """Puts an ImageNet-shaped ResNet-18 state_dict (random values) where torchvision caches
    `ResNet18_Weights.IMAGENET1K_V1` (= DEFAULT) under `TORCH_HOME=torch_home`, as a download would.
    """
    state = resnet18(num_classes=1000).state_dict()
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / Path(ResNet18_Weights.IMAGENET1K_V1.url).name)
    return state
