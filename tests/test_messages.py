"""Errors that name the real problem, not what a library guessed it to be."""

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import QUIET, SEQUENCE, cli

GRU = SEQUENCE / "gru.yaml"


def error_line(capsys: pytest.CaptureFixture, *args: str | Path) -> str:
    """The one line `python -m project ARGS` prints before it exits with code 2."""
    with pytest.raises(SystemExit) as exit:
        cli(*args, *QUIET)
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def fit_on(data_file: Path) -> list[str | Path]:
    return ["fit", "-c", GRU, "--data", "SequenceFileDataModule", "--data.train", data_file]


def test_random_bytes_are_not_an_npz_archive(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    data_file = workdir / "data.npz"
    data_file.write_bytes(np.random.default_rng(0).bytes(2000))
    # numpy takes any file that is not a zip for a pickle: "contains pickled (object) data"
    assert error_line(capsys, *fit_on(data_file)) == (
        f"error: data file {data_file} is not a valid .npz archive (corrupt, or not an npz)"
    )


def test_an_npz_of_object_arrays_is_refused_as_pickled_data(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    data_file = workdir / "data.npz"
    np.savez(data_file, x=np.array([{"step": 1}] * 4, dtype=object), y=np.arange(4))
    assert error_line(capsys, *fit_on(data_file)) == (
        f"error: data file {data_file} holds pickled (object) arrays, refused: save numeric "
        "arrays only"
    )


def test_a_directory_as_checkpoint_is_named_a_directory(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    (workdir / "runs").mkdir()
    assert error_line(capsys, "predict", "-c", GRU, "--ckpt_path", f"{workdir / 'runs'}/") == (
        f"error: checkpoint {workdir / 'runs'} is a directory, not a checkpoint file (name a .ckpt)"
    )
