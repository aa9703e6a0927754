"""A full disk, a read-only filesystem or a refused permission, struck at each place a run writes
(tests/faults.py, tests/fault_point.py): the run ends within 30 s with exit code 74 and one
`error:` line naming the file and the cause, no traceback from any thread, the checkpoints it had
unchanged, no partial file; and once the fault is gone, `--ckpt_path last` ends with the weights
of a run never struck. `python scripts/fault_table.py` runs this file and writes docs/faults.md
from the rows the tests record."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS, QUIET
from tests.faults import (
    CAUSES,
    ENV,
    FAULTS,
    Outcome,
    partial_files,
    record_row,
    run_struck,
    small_disk,
)

pytestmark = pytest.mark.slow  # two real runs per case, on a tmpfs mounted for it

FIT = [
    "fit", "-c", str(CONFIGS / "sequence" / "gru.yaml"), "--model.init_args.hidden_size", "16",
    "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
    "--trainer.max_epochs", "3", "--last_checkpoint.every_n_train_steps", "6",
    "--trainer.log_every_n_steps", "1", *QUIET,
]  # fmt: skip
# where each place's error line must point
FILES = {
    "first_checkpoint": "checkpoints",  # the folder (read-only, refused) or a file in it
    "periodic_last_ckpt": "last.ckpt",
    "tensorboard_events": "events.out.tfevents",
    "metrics_json": "metrics.json",
    "predictions_csv": "predictions.csv",
}


def project(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "project", *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def predict(run: Path, cwd: Path) -> list[str]:
    return ["predict", "-c", str(run / "config.yaml"), "--ckpt_path", "last", *QUIET]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, never struck, and its predictions: what every resumed run must equal."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    assert project(*FIT, cwd=cwd).returncode == 0
    run = cwd / "logs" / "gru" / "version_0"
    assert project(*predict(run, cwd), cwd=cwd).returncode == 0
    return run


def check(outcome: Outcome, place: str, fault: str, run: Path) -> None:
    assert outcome.code == 74, outcome.stderr[-3000:]
    assert outcome.seconds < 30
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    (line,) = outcome.error_lines
    assert FILES[place] in line and CAUSES[fault] in line, line
    assert outcome.checkpoints_intact
    assert partial_files(run.parent) == []


def record(request: pytest.FixtureRequest, place: str, fault: str, outcome: Outcome,
           same: bool) -> None:  # fmt: skip
    error = (outcome.error_lines or ["(none)"])[0]
    intact = outcome.checkpoints_intact and not partial_files(outcome.folder)
    record_row(request.node.nodeid, place, fault, outcome.code, outcome.seconds, error, intact,
               same)  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    "place", ["first_checkpoint", "periodic_last_ckpt", "tensorboard_events", "metrics_json"]
)
def test_a_fault_while_fitting_ends_in_one_line_and_the_run_resumes(
    place: str, fault: str, tmp_path: Path, uninterrupted: Path, request: pytest.FixtureRequest
) -> None:
    with small_disk(tmp_path / "logs") as disk:
        run = disk / "gru" / "version_0"
        outcome = run_struck(place, fault, disk, FIT, tmp_path, run)
        # struck before its first checkpoint, a run has nothing to resume: it starts again (as
        # `--ckpt_path last` then says), into the next version folder
        again = ["--ckpt_path", "last"] if outcome.before else []
        resumed = project("fit", "-c", str(run / "config.yaml"), *again, *QUIET, cwd=tmp_path)
        final = run if outcome.before else run.with_name("version_1")
        same = resumed.returncode == 0 and all(
            torch.equal(a, b)
            for a, b in zip(weights(final).values(), weights(uninterrupted).values(), strict=True)
        )
        record(request, place, fault, outcome, same)
        check(outcome, place, fault, run)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert same


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_while_writing_predictions_ends_in_one_line_and_a_rerun_writes_them(
    fault: str, tmp_path: Path, uninterrupted: Path, request: pytest.FixtureRequest
) -> None:
    with small_disk(tmp_path / "logs") as disk:
        run = disk / "gru" / "version_0"
        shutil.copytree(uninterrupted, run)
        (run / "predictions.csv").unlink()
        outcome = run_struck("predictions_csv", fault, disk, predict(run, tmp_path), tmp_path, run)
        rerun = project(*predict(run, tmp_path), cwd=tmp_path)
        expected = (uninterrupted / "predictions.csv").read_text()
        same = rerun.returncode == 0 and (run / "predictions.csv").read_text() == expected
        record(request, "predictions_csv", fault, outcome, same)
        check(outcome, "predictions_csv", fault, run)
        assert same, rerun.stderr[-3000:]
