import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser

import project.data
from project.data import MNIST1DDataModule, SequenceFileDataModule, SignalFrequencyDataModule
from project.errors import UserError
from tests.conftest import QUIET, ROOT, SEQUENCE, cli, cli_process

LOADER_DEFAULTS = {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
# all but the synthetic images, which stay on the training device: no loader workers
LOADED = [name for name in project.data.__all__ if name != "SyntheticImagesDataModule"]


@pytest.mark.parametrize("name", LOADED)
def test_each_datamodule_offers_the_loader_settings_its_base_declares(name: str) -> None:
    # subclasses pass them on through **kwargs: the CLI must still find them, with their defaults
    parser = ArgumentParser()
    parser.add_class_arguments(getattr(project.data, name), "data")
    defaults = parser.get_defaults().data
    assert defaults.batch_size > 0
    assert {key: defaults[key] for key in LOADER_DEFAULTS} == LOADER_DEFAULTS


def test_the_data_package_does_not_load_the_models() -> None:
    code = "import sys, project.data; print([m for m in sys.modules if 'project.models' in m])"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_mnist1d_official_split_with_a_fixed_validation_carve() -> None:
    first, second = MNIST1DDataModule(), MNIST1DDataModule()
    first.setup(), second.setup()
    sizes = {split: len(d) for split, d in first.datasets.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    assert torch.equal(first.datasets["val"].tensors[0], second.datasets["val"].tensors[0])
    x, y = next(iter(first.train_dataloader()))
    assert x.shape == (100, 40, 1) and y.shape == (100,) and y.max() < 10


def test_signal_frequency_batches_carry_true_lengths() -> None:
    data = SignalFrequencyDataModule(num_train=50, num_val=10, num_test=10, batch_size=50)
    data.setup()
    x, y, lengths = next(iter(data.train_dataloader()))
    assert x.shape == (50, 60, 1) and lengths.min() >= 20 and lengths.max() <= 60
    for row, n in zip(x, lengths, strict=True):
        assert torch.all(row[n:] == 0)
    assert 0.5 <= y.min() and y.max() <= 2.5


def write_sequences(path: Path, count: int = 60, features: int = 3, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.standard_normal((count, 12, features)).astype(np.float32),
        "y": rng.integers(0, classes, count),
        "lengths": rng.integers(1, 13, count),
    }
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    return path


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_own_files_train_through_a_config(suffix: str, workdir: Path) -> None:
    data_file = write_sequences(workdir / f"mine{suffix}")
    config = workdir / "mine.yaml"
    config.write_text(
        "model:\n  class_path: SequenceClassifier\n"
        f"data:\n  class_path: SequenceFileDataModule\n  init_args:\n    train: {data_file}\n"
        f"    test: {data_file}\n    batch_size: 16\n"
    )
    cli("fit", "-c", config, "--trainer.max_epochs", "1", "--test_after_fit", "true", *QUIET)
    assert (workdir / "logs" / "mine" / "version_0" / "metrics.json").exists()
    data = SequenceFileDataModule(train=str(data_file))
    assert (data.input_size, data.num_outputs) == (3, 4)
    assert len(data.datasets["val"]) == 6 and len(data.datasets["train"]) == 54


def test_wrong_shape_names_the_file_and_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.zeros(10), y=np.zeros(10, dtype=int))
    with pytest.raises(UserError, match=r"flat.npz: x has shape \(10,\), expected x \(samples"):
        SequenceFileDataModule(train=str(path))


@pytest.mark.slow
def test_missing_data_file_is_one_line_through_the_cli(tmp_path: Path) -> None:
    result = cli_process(
        "fit",
        "-c",
        SEQUENCE / "gru.yaml",
        "--data",
        "SequenceFileDataModule",
        "--data.train",
        tmp_path / "absent.npz",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data file {tmp_path / 'absent.npz'} does not exist "
        "(expected a .npz or .pt with x (samples, time[, features]), y (samples[, outputs]), "
        "optional lengths (samples,))"
    ]


def write_padded(path: Path, count: int = 40, with_lengths: bool = False) -> Path:
    """Sequences of varying lengths zero-padded to 30 steps, as many users' files come."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((count, 30, 2)).astype(np.float32)
    lengths = rng.integers(5, 30, count)
    for row, n in zip(x, lengths, strict=True):
        row[n:] = 0
    arrays = {"x": x, "y": rng.integers(0, 3, count)}
    np.savez(path, **arrays, **({"lengths": lengths} if with_lengths else {}))
    return path


def test_zero_padded_file_without_lengths_warns_once(workdir: Path) -> None:
    data_file = write_padded(workdir / "padded.npz")
    with pytest.warns(UserWarning) as caught:
        cli("fit", "-c", SEQUENCE / "gru.yaml", "--data", "SequenceFileDataModule",
            "--data.train", data_file, "--trainer.fast_dev_run", "true", *QUIET)  # fmt: skip
    (warning,) = [w for w in caught if "all-zero time steps" in str(w.message)]
    assert str(warning.message) == (
        f"data file {data_file}: 40 of 40 samples end in all-zero time steps, as if zero-padded, "
        "and the file has no lengths, so the model reads the padding as data: add `lengths` "
        "(40,), each sample's true number of steps"
    )


@pytest.mark.slow
def test_the_padding_warning_is_one_line_in_a_real_process(workdir: Path) -> None:
    data_file = write_padded(workdir / "padded.npz")
    data = ["--data", "SequenceFileDataModule", "--data.train", data_file]
    quick = ["--trainer.fast_dev_run", "true", *QUIET]
    result = cli_process("fit", "-c", SEQUENCE / "gru.yaml", *data, *quick, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    (index,) = [i for i, line in enumerate(lines) if "all-zero time steps" in line]
    assert lines[index].startswith(f"warning: data file {data_file}: 40 of 40 samples")
    assert "rank_zero_warn" not in result.stderr  # no source line repeated after it


def normal_sequences(kind: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    if kind == "signals":  # MNIST-1D-like: noisy waves, no step exactly zero
        t = np.linspace(0, 1, 40)
        return {"x": np.sin(2 * np.pi * rng.uniform(1, 3, (40, 1)) * t), "y": y}
    if kind == "equal_length":  # every sample fades to zero over the same last 3 steps
        x = rng.standard_normal((40, 40))
        x[:, -3:] = 0
        return {"x": x, "y": y}
    if kind == "sparse_counts":  # zero steps all through the sequences: data, not padding
        return {"x": rng.poisson(0.3, (40, 40, 1)), "y": y}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["signals", "equal_length", "sparse_counts", "padded_with_lengths"]
)
def test_no_padding_warning_on_normal_data(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "data.npz"
    if kind == "padded_with_lengths":
        write_padded(path, with_lengths=True)
    else:
        np.savez(path, **normal_sequences(kind))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SequenceFileDataModule(train=str(path))


def test_predict_on_a_file_without_labels(workdir: Path) -> None:
    data_file = write_sequences(workdir / "mine.npz", count=20)
    config = workdir / "mine.yaml"
    config.write_text(
        "model:\n  class_path: SequenceClassifier\n  init_args:\n    hidden_size: 8\n"
        f"data:\n  class_path: SequenceFileDataModule\n  init_args:\n    train: {data_file}\n"
        "    batch_size: 8\n"
    )
    cli("fit", "-c", config, "--trainer.max_epochs", "1", *QUIET)
    new = workdir / "new.npz"
    np.savez(new, x=np.random.default_rng(1).standard_normal((7, 12, 3)).astype(np.float32))
    run = workdir / "logs" / "mine" / "version_0"
    cli("predict", "-c", config, "--ckpt_path", run / "checkpoints" / "last.ckpt",
        "--data.init_args.predict", new, *QUIET)  # fmt: skip
    with (run / "predictions-new.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["index"]) for r in rows] == list(range(7))
    assert list(rows[0]) == ["index", "predicted", *(f"prob_{k}" for k in range(4))]
