"""Every model and DataModule class that the package exports builds with small settings, takes one
batch through fit, validate and predict, and declares the facts that the CLI links from the data
into the model (`num_outputs`, `task`, `input_size`: `link_arguments` in project/cli/app.py).

A class exported without an entry below fails `test_every_exported_class_has_an_entry`. Data
that comes from files gets small ones in the real on-disk format (tests/image_files.py).
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning import LightningDataModule, LightningModule, Trainer
from torch import nn
from torch.utils.data import TensorDataset

import project.data
import project.models
from project.data import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNIST1DDataModule,
    MNIST1DImagesDataModule,
    MNISTDataModule,
    SequenceDataModule,
    SequenceFileDataModule,
    SignalFrequencyDataModule,
    SyntheticImagesDataModule,
)
from project.launch_checks import default_threads
from project.models import ImageClassifier, SequenceClassifier
from tests.image_files import write_cifar10, write_image_folder, write_mnist

HERE = "tests/test_exported_classes.py"
SMALL = {"batch_size": 4, "num_workers": 0}


class ExampleSequences(SequenceDataModule):
    """The least a sequence DataModule declares and does (the base itself loads nothing)."""

    input_size, num_outputs = 3, 2

    def setup(self, stage: str | None = None) -> None:
        x, y = torch.randn(8, 5, 3), torch.arange(8) % 2
        self.datasets = {split: TensorDataset(x, y) for split in ("train", "val", "test")}


class ExampleImages(ImageDataModule):
    """The least an in-memory image DataModule declares and does."""

    def __init__(self, **loader: Any) -> None:
        super().__init__(**loader)
        self.num_outputs, self.input_size = 3, (1, 8, 8)

    def load(self) -> dict[str, TensorDataset]:
        images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
        return {split: TensorDataset(images, torch.arange(12) % 3) for split in ("train", "test")}


def write_sequences(path: Path) -> Path:
    """A `.npz` as SequenceFileDataModule reads it: x (samples, time, features), y (samples,)."""
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(12, 6, 2)).astype(np.float32), y=np.arange(12) % 3)
    return path


# each DataModule: how to build it small (in a fresh folder), and the facts it declares
DATA: dict[str, tuple[Callable[[Path], LightningDataModule], dict[str, Any]]] = {
    "CIFAR10DataModule": (
        lambda tmp: CIFAR10DataModule(root=str(write_cifar10(tmp, per_file=2)), **SMALL),
        {"num_outputs": 10, "task": "classification", "input_size": (3, 32, 32)},
    ),
    "DigitsDataModule": (
        lambda tmp: DigitsDataModule(classes=[0, 1], **SMALL),
        {"num_outputs": 2, "task": "classification", "input_size": (1, 8, 8)},
    ),
    "FashionMNISTDataModule": (
        lambda tmp: FashionMNISTDataModule(root=str(write_mnist(tmp, "FashionMNIST")), **SMALL),
        {"num_outputs": 10, "task": "classification", "input_size": (1, 28, 28)},
    ),
    "ImageDataModule": (
        lambda tmp: ExampleImages(**SMALL),
        {"num_outputs": 3, "task": "classification", "input_size": (1, 8, 8)},
    ),
    "ImageFolderDataModule": (
        lambda tmp: ImageFolderDataModule(
            root=str(write_image_folder(tmp, {"a": 5, "b": 5})), image_size=16, **SMALL
        ),
        {"num_outputs": 2, "task": "classification", "input_size": (3, 16, 16)},
    ),
    "MNISTDataModule": (
        lambda tmp: MNISTDataModule(root=str(write_mnist(tmp, "MNIST", gzipped=True)), **SMALL),
        {"num_outputs": 10, "task": "classification", "input_size": (1, 28, 28)},
    ),
    "MNIST1DDataModule": (
        lambda tmp: MNIST1DDataModule(**SMALL),
        {"num_outputs": 10, "task": "classification", "input_size": 1},
    ),
    "MNIST1DImagesDataModule": (
        lambda tmp: MNIST1DImagesDataModule(classes=[3, 7], image_size=16, **SMALL),
        {"num_outputs": 2, "task": "classification", "input_size": (1, 16, 16)},
    ),
    "SequenceDataModule": (
        lambda tmp: ExampleSequences(**SMALL),
        {"num_outputs": 2, "task": "classification", "input_size": 3},
    ),
    "SequenceFileDataModule": (
        lambda tmp: SequenceFileDataModule(
            train=str(write_sequences(tmp / "train.npz")),
            test=str(write_sequences(tmp / "test.npz")),
            **SMALL,
        ),
        {"num_outputs": 3, "task": "classification", "input_size": 2},
    ),
    "SignalFrequencyDataModule": (
        lambda tmp: SignalFrequencyDataModule(num_train=8, num_val=4, num_test=4, **SMALL),
        {"num_outputs": 1, "task": "regression", "input_size": 1},
    ),
    "SyntheticImagesDataModule": (
        lambda tmp: SyntheticImagesDataModule(
            num_samples=12, image_size=8, num_classes=3, on_device=False, batch_size=4
        ),
        {"num_outputs": 3, "task": "classification", "input_size": (3, 8, 8)},
    ),
}


def sequence_model(**facts: Any) -> LightningModule:
    return SequenceClassifier(**facts, hidden_size=8)


def image_model(**facts: Any) -> LightningModule:
    return ImageClassifier(**facts, backbone="small_cnn")


# each model: the DataModule above it trains on, and how it is built from that data's facts (a
# plain `nn.Module` through the LightningModule that trains it)
MODELS: dict[str, tuple[str, Callable[..., LightningModule]]] = {
    "ImageClassifier": (
        "DigitsDataModule",
        lambda **facts: ImageClassifier(**facts, backbone="resnet18", image_size=32),
    ),
    "RecurrentNet": ("SequenceDataModule", sequence_model),
    "SequenceClassifier": ("SignalFrequencyDataModule", sequence_model),
    "SmallCNN": ("DigitsDataModule", image_model),
}


def exported(package: object) -> set[str]:
    """The package's public model and DataModule classes."""
    names = getattr(package, "__all__", [n for n in dir(package) if not n.startswith("_")])
    kinds = (nn.Module, LightningDataModule)
    return {
        name
        for name in names
        if inspect.isclass(cls := getattr(package, name)) and issubclass(cls, kinds)
    }


def test_every_exported_class_has_an_entry() -> None:
    models, data = exported(project.models), exported(project.data)
    if missing := sorted(models - set(MODELS)):
        pytest.fail(f"{missing} exported with no entry: add one to MODELS in {HERE}")
    if missing := sorted(data - set(DATA)):
        pytest.fail(f"{missing} exported with no entry: add one to DATA in {HERE}")
    if stale := sorted(set(MODELS) - models) + sorted(set(DATA) - data):
        pytest.fail(f"{stale} not exported any more: remove their entries from {HERE}")


def run_one_batch(data: LightningDataModule, model: LightningModule, folder: Path) -> None:
    default_threads()  # as `python -m project` runs: torch's threads crawl on a shared machine
    trainer = Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        default_root_dir=folder,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert trainer.state.finished and trainer.global_step == 1
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    (predictions, *_) = trainer.predict(model, datamodule=data)
    assert 0 < len(predictions) <= data.batch_size


def declared_facts(data: LightningDataModule) -> dict[str, Any]:
    """The facts as the CLI reads them: right after `__init__`, before any `setup`."""
    return {fact: getattr(data, fact) for fact in ("num_outputs", "task", "input_size")}


@pytest.mark.parametrize("name", sorted(DATA))
def test_datamodule_declares_its_facts_and_runs_one_batch(name: str, tmp_path: Path) -> None:
    build, facts = DATA[name]
    data = build(tmp_path)
    assert declared_facts(data) == facts
    sequences = isinstance(data, SequenceDataModule)
    run_one_batch(data, (sequence_model if sequences else image_model)(**facts), tmp_path)
    inputs = next(iter(data.train_dataloader()))[0]
    if sequences:  # (batch, time, features)
        assert inputs.shape[-1] == facts["input_size"]
    else:  # images (batch, channels, height, width)
        assert tuple(inputs.shape[1:]) == facts["input_size"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_takes_the_data_facts_and_runs_one_batch(name: str, tmp_path: Path) -> None:
    data_name, build = MODELS[name]
    data = DATA[data_name][0](tmp_path)
    model = build(**declared_facts(data))
    cls = getattr(project.models, name)
    assert any(isinstance(module, cls) for module in model.modules()), f"{name} is not trained"
    run_one_batch(data, model, tmp_path)
