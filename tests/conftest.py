import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from project.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SEQUENCE = CONFIGS / "sequence"  # the sequence experiments: gru, lstm, rnn, signal_frequency
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs the test from an empty folder, so that `logs/` is written there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str | Path) -> None:
    """`python -m project ARGS`, in this process (quicker than a subprocess)."""
    main([str(a) for a in args])


def cli_process(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m project ARGS` as a user types it: a new process, its output captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "project", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def service_missing(problem: str) -> None:
    """Skips a test whose service (a Slurm cluster, a database) is not here; under CI=true, where
    .ci/run starts them all, fails it instead, so that a broken start cannot pass as skips."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {problem}")
    pytest.skip(problem)


def run_dirs(workdir: Path, experiment: str) -> list[Path]:
    return sorted((workdir / "logs" / experiment).glob("version_*"))


def saved_step(run_folder: Path) -> int:
    """The step of a run's `checkpoints/last.ckpt`."""
    return torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


@pytest.fixture
def finished_run(workdir: Path) -> Path:
    """A short finished `make train`-style run (2 epochs), in `workdir`."""
    cli(
        "fit",
        "-c",
        CONFIGS / "sequence" / "gru.yaml",
        "--trainer.max_epochs",
        "2",
        "--test_after_fit",
        "true",
        *QUIET,
    )
    (run,) = run_dirs(workdir, "gru")
    return run
