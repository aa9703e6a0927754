"""Runs that go wrong leave what they had: diverging losses, simultaneous runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from project.loggers import TensorBoardLogger
from tests.conftest import QUIET, ROOT, SEQUENCE

pytestmark = pytest.mark.slow  # real processes and whole diverging trainings


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    # a sane first epoch, then a learning rate multiplied by 1e14: the loss blows up in epoch 1
    result = subprocess.run(
        [sys.executable, "-m", "project", "fit", "-c", SEQUENCE / "signal_frequency.yaml",
         "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.01",
         "--lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size", "1",
         "--lr_scheduler.gamma", "1e14", "--trainer.max_epochs", "3", *QUIET],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: train/loss became ")
    assert " at step 4" in last_line and "(epoch 1)" in last_line  # 40 steps per epoch
    checkpoint = tmp_path / "logs/signal_frequency/version_0/checkpoints/last.ckpt"
    assert f"last good checkpoint: {checkpoint.relative_to(tmp_path)}" in last_line
    state = torch.load(checkpoint, weights_only=False)
    assert state["global_step"] == 40
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


def test_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "project",
                "fit",
                "-c",
                SEQUENCE / "gru.yaml",
                "--seed_everything",
                str(seed),
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "3",
                "--trainer.limit_val_batches",
                "1",
                *QUIET,
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        for seed in (1, 2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    folders = sorted((tmp_path / "logs" / "gru").iterdir())
    assert [f.name for f in folders] == ["version_0", "version_1"]
    seeds = sorted(
        line.split(":")[1].strip()
        for folder in folders
        for line in (folder / "config.yaml").read_text().splitlines()
        if line.startswith("seed_everything:")
    )
    assert seeds == ["1", "2"]  # each run wrote its own config into its own folder
    for folder in folders:
        assert (folder / "metrics.json").exists() and (folder / "checkpoints/last.ckpt").exists()


def test_version_folder_is_claimed_when_chosen(tmp_path: Path) -> None:
    # Two runs that both pick a version before either has written anything: with Lightning's
    # own logger both get version_0 (and write into one folder); claiming the folder on choice
    # gives the second run version_1.
    first = TensorBoardLogger(tmp_path, name="gru")
    second = TensorBoardLogger(tmp_path, name="gru")
    assert (first.version, second.version) == (0, 1)
    assert (tmp_path / "gru" / "version_0").is_dir() and (tmp_path / "gru" / "version_1").is_dir()
