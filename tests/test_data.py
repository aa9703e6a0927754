from pathlib import Path

import numpy as np
import pytest
import torch

from project.data import MNIST1DDataModule, SequenceFileDataModule, SignalFrequencyDataModule
from project.errors import UserError
from tests.conftest import CONFIGS, QUIET, cli, cli_process


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


def test_missing_data_file_is_one_line_through_the_cli(tmp_path: Path) -> None:
    result = cli_process(
        "fit",
        "-c",
        CONFIGS / "gru.yaml",
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
