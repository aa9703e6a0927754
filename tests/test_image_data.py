"""Image DataModules on files written here in each source's real on-disk format, offline."""

import csv
import os
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import pytest
import torch

from project.data.cifar10 import CIFAR10DataModule
from project.data.digits import DigitsDataModule
from project.data.fashion_mnist import FashionMNISTDataModule
from project.data.image_folder import ImageFolderDataModule
from project.data.mnist import MNISTDataModule
from project.data.mnist1d_images import MNIST1DImagesDataModule
from project.errors import UserError
from tests.callbacks import callback_flag
from tests.conftest import CONFIGS, QUIET, cli, run_dirs, saved_step
from tests.image_files import write_cifar10, write_image_folder, write_mnist
from tests.test_big_sequences import here, recorded


def test_digits_are_uint8_images_with_the_chosen_classes_relabelled() -> None:
    from sklearn.datasets import load_digits

    data = DigitsDataModule(classes=[7, 3])
    assert (data.num_outputs, data.task, data.input_size) == (2, "classification", (1, 8, 8))
    data.setup()
    images, labels = (
        torch.cat([d.tensors[0] for d in data.datasets.values()]),
        torch.cat([d.tensors[1] for d in data.datasets.values()]),
    )
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    # the 17 grey levels 0-16 are spread over 0-255, not clipped
    assert set(images.unique().tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert images.max() == 255
    target = load_digits().target
    assert (labels == 0).sum() == (target == 7).sum() and (labels == 1).sum() == (target == 3).sum()
    again = DigitsDataModule(classes=[7, 3])
    again.setup()
    assert torch.equal(again.datasets["test"].tensors[0], data.datasets["test"].tensors[0])


def test_digits_without_scikit_learn_is_one_line_naming_the_extra(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """scikit-learn is an extra (`.[digits]`): the small CNN's experiment without it says so
    before any work, in one line."""
    for name in ("sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import` finds when it is missing
    with pytest.raises(SystemExit) as exit_info:
        cli("fit", "-c", CONFIGS / "image" / "small_cnn.yaml", "--trainer.fast_dev_run", "1")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: DigitsDataModule needs scikit-learn: pip install -e '.[digits]'"
    assert not (workdir / "logs").exists()


def test_mnist1d_images_are_line_plots() -> None:
    data = MNIST1DImagesDataModule(classes=[5, 6, 7, 8, 9])
    assert (data.num_outputs, data.input_size) == (5, (1, 32, 32))
    data.setup()
    assert {split: len(d) for split, d in data.datasets.items()} == {
        "train": 1756,
        "val": 251,
        "test": 493,
    }
    images, labels = data.datasets["train"].tensors
    assert labels.min() == 0 and labels.max() == 4
    lit_per_column = (images[:, 0] > 0).sum(dim=1)  # (n, columns)
    assert (lit_per_column >= 1).all(), "the line has a gap"


def test_cifar10_reads_the_python_batches(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_file=4)
    data = CIFAR10DataModule(root=str(tmp_path), download=False, val_fraction=0.25)
    assert (data.num_outputs, data.input_size) == (10, (3, 32, 32))
    data.setup()
    assert {split: len(d) for split, d in data.datasets.items()} == {
        "train": 15,
        "val": 5,
        "test": 4,
    }
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as file:
        written = pickle.load(file)
    images, labels = data.datasets["test"].tensors
    expected = torch.from_numpy(written["data"].reshape(-1, 3, 32, 32))
    assert torch.equal(images, expected)  # channel planes, rows, columns: as CIFAR stores them
    assert labels.tolist() == written["labels"]
    batch = next(iter(data.train_dataloader()))
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (15, 3, 32, 32)


def test_missing_cifar10_says_where_the_files_go(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar-10-batches-py lacks data_batch_1.*download true"):
        CIFAR10DataModule(root=str(tmp_path), download=False)


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "payload-ran"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as file:
        pickle.dump({"data": Payload(marker), "labels": [1]}, file, protocol=2)
    data = CIFAR10DataModule(root=str(tmp_path))
    with pytest.raises(UserError, match="data_batch_3 is not a CIFAR-10 batch.*refused"):
        data.setup()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "folder"), [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")]
)
def test_mnist_formats_read_from_raw_idx_files(tmp_path: Path, module: type, folder: str) -> None:
    write_mnist(tmp_path, folder, train=12, test=4)
    data = module(root=str(tmp_path), download=False, val_fraction=0.25)
    assert (data.num_outputs, data.input_size) == (10, (1, 28, 28))
    data.setup()
    assert {split: len(d) for split, d in data.datasets.items()} == {
        "train": 9,
        "val": 3,
        "test": 4,
    }
    raw = (tmp_path / folder / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    expected = torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(4, 1, 28, 28)
    images, labels = data.datasets["test"].tensors
    assert torch.equal(images, expected) and labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("module", "folder"), [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")]
)
def test_mnist_formats_read_the_gz_files_as_published(
    tmp_path: Path, module: type, folder: str
) -> None:
    write_mnist(tmp_path / "gz", folder, train=12, test=4, gzipped=True)
    assert sorted(p.name for p in (tmp_path / "gz" / folder / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    write_mnist(tmp_path / "plain", folder, train=12, test=4)
    gz, plain = (module(root=str(tmp_path / r), val_fraction=0.25) for r in ("gz", "plain"))
    gz.setup(), plain.setup()
    for split, dataset in gz.datasets.items():
        assert all(map(torch.equal, dataset.tensors, plain.datasets[split].tensors))
    assert not (tmp_path / "gz" / folder / "raw" / "t10k-images-idx3-ubyte").exists()


def test_missing_mnist_says_which_files_are_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"MNIST/raw lacks train-images-idx3-ubyte.*download"):
        MNISTDataModule(root=str(tmp_path))


def test_image_folder_split_from_one_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "pets", {"cat": 6, "dog": 4})
    data = ImageFolderDataModule(
        root=str(tmp_path / "pets"),
        image_size=24,
        val_fraction=0.2,
        test_fraction=0.2,
        batch_size=4,
    )
    assert (data.num_outputs, data.input_size, data.task) == (2, (3, 24, 24), "classification")
    data.setup()
    assert {split: len(d) for split, d in data.datasets.items()} == {
        "train": 6,
        "val": 2,
        "test": 2,
    }
    images, labels = next(iter(data.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 24, 24)
    # the colour tells the class apart: a dog image is not a cat image
    colours = {"cat": (0, 255), "dog": (80, 195)}
    for image, label in zip(images, labels, strict=True):
        red, green = colours[data.classes[label]]
        assert abs(image[0].float().mean() - red) < 2 and abs(image[1].float().mean() - green) < 2
    twice = ImageFolderDataModule(root=str(tmp_path / "pets"), val_fraction=0.2, test_fraction=0.2)
    twice.setup()
    assert twice.datasets["test"].indices == data.datasets["test"].indices


def test_image_folder_with_split_folders(tmp_path: Path) -> None:
    for split, count in (("train", 5), ("test", 2)):
        write_image_folder(tmp_path / split, {"a": count, "b": count, "c": count})
    data = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_fraction=0.2)
    assert data.num_outputs == 3
    data.setup()
    assert {split: len(d) for split, d in data.datasets.items()} == {
        "train": 12,
        "val": 3,  # carved from train/: there is no val/
        "test": 6,
    }


def test_predict_labels_a_folder_of_new_images(workdir: Path) -> None:
    write_image_folder(workdir / "pets", {"cat": 4, "dog": 4})
    new = write_image_folder(workdir / "unlabelled", {"new": 5}) / "new"  # no class folders
    folder = ["--data", "ImageFolderDataModule", "--data.root", workdir / "pets"]
    small = ["--data.image_size", "16", "--data.batch_size", "4", "--trainer.max_epochs", "1"]
    cli("fit", "-c", CONFIGS / "image" / "small_cnn.yaml", *folder, *small, *QUIET)
    (run,) = run_dirs(workdir, "small_cnn")
    cli(
        "predict",
        "-c",
        run / "config.yaml",
        "--ckpt_path",
        run / "checkpoints" / "last.ckpt",
        "--data.init_args.predict",
        new,
        *QUIET,
    )
    with (run / "predictions-new.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["index", "file", "predicted", "prob_0", "prob_1"]
    assert [(r["index"], r["file"]) for r in rows] == [(str(i), f"{i}.png") for i in range(5)]
    with pytest.raises(UserError, match=f"predict folder {workdir} holds no images"):
        ImageFolderDataModule(root=str(workdir / "pets"), predict=str(workdir))


def test_image_folder_mistakes_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image folder .* not found"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere"))
    write_image_folder(tmp_path / "train", {"a": 1, "b": 1})
    write_image_folder(tmp_path / "val", {"a": 1, "x": 1})
    with pytest.raises(UserError, match=r"val has classes \['a', 'x'\], train has \['a', 'b'\]"):
        ImageFolderDataModule(root=str(tmp_path))
    # the loader settings are checked as for every DataModule (SplitsDataModule)
    with pytest.raises(UserError, match="data.batch_size must be a positive integer, got 0"):
        ImageFolderDataModule(root=str(tmp_path / "train"), batch_size=0)
    with pytest.raises(UserError, match="data.num_workers must be >= 0, got -1"):
        ImageFolderDataModule(root=str(tmp_path / "train"), num_workers=-1)


def test_augmentation_is_per_image_and_in_training_only(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    data = CIFAR10DataModule(root=str(tmp_path))
    data.setup()
    image = torch.arange(3 * 32 * 32).reshape(3, 32, 32).to(torch.uint8)
    batch = (image.expand(8, -1, -1, -1), torch.zeros(8, dtype=torch.int64))
    torch.manual_seed(0)
    data.trainer = SimpleNamespace(training=True)
    images, _ = data.on_after_batch_transfer(batch, 0)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert len({tuple(i.flatten().tolist()) for i in images}) > 1, "one crop for the whole batch"
    data.trainer = SimpleNamespace(training=False)
    assert data.on_after_batch_transfer(batch, 0)[0] is batch[0]
    unaugmented = CIFAR10DataModule(root=str(tmp_path), augment=False)
    unaugmented.setup()
    unaugmented.trainer = SimpleNamespace(training=True)
    assert unaugmented.on_after_batch_transfer(batch, 0)[0] is batch[0]


def test_downloads_without_network_say_where_the_files_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr("project.data.cifar10.download_and_extract_archive", no_network)
    with pytest.raises(UserError, match=f"could not download CIFAR-10 .* into {tmp_path}"):
        CIFAR10DataModule(root=str(tmp_path), download=True).prepare_data()
    # torchvision's MNIST tries each mirror, then gives up with a RuntimeError
    monkeypatch.setattr("torchvision.datasets.utils.urllib.request.urlopen", no_network)
    with pytest.raises(
        UserError, match=f"could not download MNIST .* in {tmp_path}/MNIST/raw"
    ) as e:
        MNISTDataModule(root=str(tmp_path), download=True).prepare_data()
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_last_batch_of_one_image_is_dropped_so_batchnorm_can_train(workdir: Path) -> None:
    """7 training images in batches of 3 would end on a batch of one, which BatchNorm refuses
    ("Expected more than 1 value per channel when training") in ResNet's last 1×1 layers."""
    for split, count in (("train", 4), ("val", 1), ("test", 1)):
        write_image_folder(workdir / "pets" / split, {"cat": count, "dog": count - (count > 1)})
    cli(
        "fit",
        "-c",
        CONFIGS / "image" / "small_cnn.yaml",
        "--data",
        "ImageFolderDataModule",
        "--data.root",
        workdir / "pets",
        "--data.image_size",
        "16",
        "--data.batch_size",
        "3",
        "--model.backbone",
        "resnet18",
        "--trainer.max_epochs",
        "2",
        *QUIET,
    )
    (run,) = run_dirs(workdir, "small_cnn")
    assert saved_step(run) == 2 * 2  # two full batches an epoch; the seventh image out


def test_image_folder_resumes_mid_epoch_to_the_same_weights(workdir: Path) -> None:
    """Ctrl-C at step 6 (epoch 1, batch 2) and a resume end with bitwise the weights of a run
    never stopped: the same images in the same order, cropped and flipped the same way in the
    DataLoader workers."""

    write_image_folder(workdir / "pets", {"cat": 10, "dog": 10})  # 14 train: 4 batches of 4
    common = ["-c", CONFIGS / "image" / "small_cnn.yaml", "--data", "ImageFolderDataModule",
        "--data.root", workdir / "pets", "--data.image_size", "16", "--data.batch_size", "4",
        "--data.num_workers", "2", "--trainer.max_epochs", "2", "--seed_everything", "7",
        *QUIET]  # fmt: skip
    cli("fit", *common, "--experiment", "whole", *callback_flag("SaveWeights", folder="whole"))
    with pytest.raises(SystemExit, match="130"):
        cli("fit", *common, "--experiment", "cut", *here("RecordTargets", path="cut"),
            *here("CtrlCAtStep", step=6))  # fmt: skip
    assert len(recorded(workdir / "cut-rank0.jsonl")) == 6
    (cut,) = run_dirs(workdir, "cut")
    cli("fit", "-c", cut / "config.yaml", "--ckpt_path", "last",
        *callback_flag("SaveWeights", folder="rest"), *QUIET)  # fmt: skip
    assert len(recorded(workdir / "cut-rank0.jsonl")) == 8
    whole = torch.load(workdir / "whole" / "weights-rank0.pt", weights_only=True)["weights"]
    rest = torch.load(workdir / "rest" / "weights-rank0.pt", weights_only=True)["weights"]
    for key, value in whole.items():
        assert torch.equal(value, rest[key]), key
