"""A search that meets faults ends: trials that all fail stop it after `--max_failures` with the
first failure's error and log; a stale trial is retried at most `--max_retries` times; a journal
cut mid-line still loads, and its lock left by a fault does not hang the next writer; a full,
read-only or refused journal ends the search in one line, and a rerun finishes the study. The
PostgreSQL restart is in tests/test_search_postgres.py."""

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from project.search.study import Search
from project.search.worker import SearchWorker, worker_gone
from project.study_storage import JournalLock, make_storage
from tests.callbacks import callback_flag
from tests.conftest import ROOT
from tests.faults import (
    AS_A_USER,
    CAUSES,
    ENV,
    FAULTS,
    partial_files,
    record_row,
    small_disk,
    strike,
)
from tests.test_model_mistakes import MISTAKES
from tests.test_readme_examples import readme_files
from tests.test_search import GRU, SMALL, load, search, space_file


def worker_over(tmp_path: Path, **settings: object) -> SearchWorker:
    """A worker of a study in a journal under `tmp_path`, with the command's defaults."""
    args = argparse.Namespace(
        config=["gru.yaml"], space=tmp_path / "space.yaml", study="s", seed=0, worker=0,
        storage=str(tmp_path / "journal.log"), trials=5, heartbeat=30.0, stale_after=60.0,
        max_failures=3, max_retries=2,
    )  # fmt: skip
    for key, value in settings.items():
        setattr(args, key, value)
    return SearchWorker(args, [])


def test_a_stale_trial_is_retried_at_most_max_retries_times(tmp_path: Path) -> None:
    """A trial whose worker dies every time (it kills its node, say) is run again at most
    `--max_retries` times, and not forever."""
    for max_retries in (0, 1, 3):
        worker = worker_over(tmp_path, study=f"s{max_retries}", max_retries=max_retries)
        study = Search.study(worker, "minimize")
        space = {"x": optuna.distributions.FloatDistribution(0, 1)}
        waiting = True  # the trial, then each retry the study enqueues
        while waiting:
            trial = study.ask(space)
            trial.set_user_attr("heartbeat", time.time() - 3600)  # its worker died an hour ago
            worker.fail_stale(study)
            waiting = bool(study.get_trials(states=(TrialState.WAITING,)))
            assert len(study.trials) <= max_retries + 1, "retried more than --max_retries"
        retries = [t for t in study.trials if "retry_of" in t.user_attrs]
        assert len(retries) == max_retries
        assert all(t.user_attrs["retry_of"] == 0 for t in retries)
        assert all(t.params == study.trials[0].params for t in retries)


def test_a_trial_whose_worker_here_has_ended_is_stale_at_once() -> None:
    """A rerun after a fault (or a kill) runs the trial of a worker on this host whose process
    has ended without waiting `--stale_after`; a live worker's, another host's, a Slurm task's
    (a requeue continues it) are left to their heartbeats."""
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    host = os.uname().nodename
    gone = {f"{host}-{ended.pid}-0": True, f"{host}-{os.getpid()}-0": False,
            f"{host}-1-3": False, f"another-{host}-{ended.pid}-0": False, "slurm-4242": False,
            "": False}  # fmt: skip
    assert {name: worker_gone({"worker": name}) for name in gone} == gone
    assert worker_gone({}) is False


@pytest.mark.parametrize("cut", [1, 17, -1])
def test_a_journal_cut_mid_line_loads_and_takes_new_trials(tmp_path: Path, cut: int) -> None:
    """A full disk or a kill leaves part of a journal line: the study still loads, and what is
    written next is not glued to the part (Optuna's own backend then fails to load it)."""
    journal = tmp_path / "journal.log"
    study = optuna.create_study(study_name="s", storage=make_storage(str(journal)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = journal.read_bytes()
    partial = b'{"op_code":8,"worker_id":"w","trial_id":1,"user_attr":{"heartbeat":1.0}}'
    journal.write_bytes(whole + partial[:cut])
    study = optuna.load_study(study_name="s", storage=make_storage(str(journal)))
    assert journal.read_bytes() == whole
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    reloaded = optuna.load_study(study_name="s", storage=make_storage(str(journal)))
    assert len(reloaded.trials) == 3


def test_a_journal_lock_left_by_a_fault_neither_hangs_nor_outlives_it(tmp_path: Path) -> None:
    """A writer struck while it held the journal's lock leaves the lock behind (it cannot be
    removed from a read-only folder): the next writer raises the disk's error at once, naming
    the journal, instead of spinning on it; once the fault is gone, a writer breaks the lock
    after its grace period (the holder is dead) and writes."""
    with small_disk(tmp_path / "disk", size="1m") as disk:
        journal = disk / "journal.log"
        study = optuna.create_study(study_name="s", storage=make_storage(str(journal)))
        os.symlink(journal, f"{journal}.lock")  # as a writer struck mid-append leaves it
        undo = strike("read_only", disk, disk)
        started = time.monotonic()
        with pytest.raises(OSError) as caught:
            study.set_user_attr("after", 1)
        assert time.monotonic() - started < 1
        assert caught.value.errno == errno.EROFS and caught.value.filename == str(journal)
        undo()
        lock = JournalLock(str(journal), grace_period=3)
        started = time.monotonic()
        lock.acquire()
        assert 3 <= time.monotonic() - started < 6
        lock.release()
        study.set_user_attr("after", 1)
        assert optuna.load_study(study_name="s", storage=make_storage(str(journal))).user_attrs
        assert not Path(f"{journal}.lock").exists()


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_stops_with_the_first_error(tmp_path: Path) -> None:
    """The README's model without the OptimizerCallable hint fails every trial: the search
    stops after `--max_failures`, exits non-zero, and says why in one line, with the log."""
    files = readme_files()
    (old, new), expected = (
        MISTAKES["optimizer without OptimizerCallable"][0][0],
        "OptimizerCallable",
    )
    (tmp_path / "my_models.py").write_text(files["my_models.py"].replace(old, new))
    (tmp_path / "my_data.py").write_text(files["my_data.py"])
    (tmp_path / "experiment.yaml").write_text(files["my_experiment.yaml"])
    space = space_file(tmp_path, "optimizer.init_args.lr: {type: float, low: 0.001, high: 0.01}\n")
    args = ["-c", "experiment.yaml", "--space", space, "--trials", 3, "--max_failures", 2, *SMALL]
    result = search(tmp_path, *args, env={"PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    log = "logs/experiment/search/space/trial-0000.out"
    assert "2 trials failed in a row" in line and "trial 0" in line, line
    assert expected in line and log in line, line
    journal = tmp_path / "logs" / "experiment" / "search" / "space" / "journal.log"
    trials = load(tmp_path, str(journal)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]


def strike_journal(fault: str, disk: Path, journal: Path) -> Callable[[], None]:
    """`fault` on the journal's disk. A full disk is filled with the journal ending on a block
    boundary (one whole line added, a study attribute, under the journal's lock): else appends
    fit the slack of its last block (a tmpfs page, 4 KiB: dozens of heartbeats) before the
    kernel refuses one, and the fault shows only then."""
    if fault != "disk_full":
        return strike(fault, disk, disk)
    study_id = make_storage(str(journal)).get_study_id_from_name("space")
    line = {"op_code": 2, "worker_id": "test", "study_id": study_id, "user_attr": {"pad": ""}}
    empty = len(json.dumps(line, separators=(",", ":"))) + 1
    lock = JournalLock(str(journal))
    lock.acquire()
    try:
        block = os.statvfs(disk).f_bsize
        size = -(journal.stat().st_size + empty) % block
        line["user_attr"]["pad"] = "x" * size
        with open(journal, "a") as file:
            file.write(json.dumps(line, separators=(",", ":")) + "\n")
        assert journal.stat().st_size % block == 0
        return strike(fault, disk, disk)
    finally:
        lock.release()


# where the journal is struck while trial 0 trains: by the worker's heartbeat (the search's own
# write: its worker beats every 0.5 s), or by trial 0's reporter after its first validation
# (the worker then beats only every 10 minutes)
HEARTBEATS = {"search_journal_worker": 0.5, "search_journal_reporter": 600.0}


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("place", HEARTBEATS)
def test_a_fault_in_the_journal_ends_in_one_line_and_a_rerun_finishes_the_study(
    place: str, fault: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The journal on its own small disk, struck while trial 0 trains: the search ends within
    30 s, in one line naming the journal and the cause, with no traceback, the journal whole;
    rerun once the fault is gone, the same command finishes the study, trial 0 run again with
    its values (its worker has ended: no waiting for `--stale_after`)."""
    space = space_file(tmp_path)
    with small_disk(tmp_path / "journal") as disk:
        journal = disk / "journal.log"
        args = ["-c", GRU, "--space", space, "--trials", 1, "--pruner", "none", *SMALL]
        args += ["--trainer.max_epochs", 1, "--storage", journal, "--heartbeat", HEARTBEATS[place]]
        args += callback_flag("SlowBatches", seconds=0.5, progress="progress")
        command = [*AS_A_USER, sys.executable, "-m", "project.search", *map(str, args)]
        with open(tmp_path / "stderr", "w") as err, open(tmp_path / "stdout", "w") as out:
            process = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=out, stderr=err,
                                       start_new_session=True)  # fmt: skip
        progress = tmp_path / "logs" / "gru" / "search" / "space" / "trial-0000" / "progress"
        deadline = time.monotonic() + 240
        while not progress.exists():  # trial 0 has trained a step: its first validation is due
            assert process.poll() is None and time.monotonic() < deadline, (
                f"trial 0 never trained: {(tmp_path / 'stderr').read_text()[-3000:]}"
            )
            time.sleep(0.05)
        held = journal.read_bytes()
        undo = strike_journal(fault, disk, journal)
        started = time.monotonic()
        try:
            process.wait(timeout=90)  # 30 s asked, and slack to measure a late exit
            seconds = time.monotonic() - started
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the search, its worker and its trial
            process.wait()
            raise
        finally:
            undo()
        stderr = (tmp_path / "stderr").read_text()
        kept = journal.read_bytes()
        intact = kept.startswith(held) and kept.endswith(b"\n") and partial_files(disk) == []
        rerun = search(tmp_path, *args, timeout=240)
        trials = load(tmp_path, str(journal)).trials
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        finished = len(done) == 1 and done[0].params == trials[0].params
        lines = [x for x in stderr.splitlines() if x.startswith("error:")] or ["(none)"]
        shown = lines[0].replace(str(tmp_path), "$TMP")  # the table's line, without pytest's path
        record_row(request.node.nodeid, place, fault, process.returncode, seconds, shown,
                   intact, rerun.returncode == 0 and finished)  # fmt: skip
        assert process.returncode == 74 and seconds < 30, stderr[-3000:]
        assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
        (line,) = lines
        struck = {
            "search_journal_worker": "error: cannot write",
            "search_journal_reporter": "error: trial 0 stopped on a disk fault: cannot write",
        }
        assert line.startswith(f"{struck[place]} {journal}: {CAUSES[fault]}"), line
        assert intact
        assert rerun.returncode == 0 and finished, rerun.stdout + rerun.stderr
        assert not Path(f"{journal}.lock").exists()
