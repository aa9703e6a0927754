"""Every file in configs/image/ parses and fits one batch, offline.

The configs name ImageNet weights and datasets to download; here `weights` is set to null and
the data roots point at small datasets written in their real formats, so nothing is fetched.
Backbones made for 224×224 inputs run at 32×32 (Inception v3 keeps its 299: its auxiliary
classifier needs it), batches hold 2 images.
"""

from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIGS, QUIET, cli
from tests.image_files import (
    cache_resnet18_imagenet_weights,
    write_cifar10,
    write_image_folder,
    write_mnist,
)

IMAGE_CONFIGS = sorted((CONFIGS / "image").glob("*.yaml"))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data root for each DataModule that reads files."""
    base = tmp_path_factory.mktemp("image-data")
    return {
        "CIFAR10DataModule": write_cifar10(base / "cifar", per_file=2),
        "MNISTDataModule": write_mnist(base / "mnist", "MNIST"),
        "FashionMNISTDataModule": write_mnist(base / "fashion", "FashionMNIST"),
        "ImageFolderDataModule": write_image_folder(base / "folder", {"a": 5, "b": 5}),
    }


def offline_flags(config: Path, roots: dict[str, Path], keep_weights: bool = False) -> list[str]:
    spec = yaml.safe_load(config.read_text())
    model, data = spec["model"]["init_args"], spec["data"]
    flags = ["--data.init_args.batch_size", "2"]
    if not keep_weights:
        flags += ["--model.init_args.weights", "null"]
    if "image_size" not in model and model["backbone"] != "inception_v3":
        flags += ["--model.init_args.image_size", "32"]
    if data["class_path"] in roots:
        flags += ["--data.init_args.root", str(roots[data["class_path"]])]
        flags += ["--data.init_args.num_workers", "0"]
    if "download" in data.get("init_args", {}):
        flags += ["--data.init_args.download", "false"]
    if data["class_path"] == "ImageFolderDataModule":
        flags += ["--data.init_args.image_size", "32"]
    if data["class_path"] == "SyntheticImagesDataModule":  # not 1.5 GB of random 224×224 images
        flags += ["--data.init_args.num_samples", "8", "--data.init_args.image_size", "32"]
        flags += ["--model.init_args.image_size", "32"]
        # one training step and no validation, as the config says: ResNet-50's running BatchNorm
        # statistics after one step of 2 random images overflow on the validation image
        flags += ["--trainer.fast_dev_run", "false", "--trainer.max_steps", "1"]
    return flags


def test_the_folder_holds_what_the_readme_lists() -> None:
    names = {p.stem for p in IMAGE_CONFIGS}
    assert names == {
        "finetune_stage1",
        "finetune_stage2",
        "inception_v3",
        "resnet18_cifar10",
        "resnet50_staged",
        "resnet50_throughput",
        "small_cnn",
        "vgg16",
    }


@pytest.mark.parametrize("config", IMAGE_CONFIGS, ids=lambda p: p.stem)
def test_image_config_prints(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:
        cli("fit", "-c", config, "--print_config")
    assert exit.value.code in (0, None)
    assert "ImageClassifier" in capsys.readouterr().out


@pytest.mark.parametrize("config", IMAGE_CONFIGS, ids=lambda p: p.stem)
def test_image_config_fits_one_batch(config: Path, roots: dict, workdir: Path) -> None:
    fast = CONFIGS / "debug" / "fast_dev_run.yaml"
    cli("fit", "-c", config, "-c", fast, *offline_flags(config, roots), *QUIET)


def test_imagenet_weights_of_a_config_come_from_torchvision_cache(
    roots: dict, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `weights: DEFAULT` as the config says it, once the file was downloaded: no network needed
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))
    cache_resnet18_imagenet_weights(workdir / "torch")
    config = CONFIGS / "image" / "resnet18_cifar10.yaml"
    assert yaml.safe_load(config.read_text())["model"]["init_args"]["weights"] == "DEFAULT"
    fast = CONFIGS / "debug" / "fast_dev_run.yaml"
    cli("fit", "-c", config, "-c", fast, *offline_flags(config, roots, keep_weights=True), *QUIET)
