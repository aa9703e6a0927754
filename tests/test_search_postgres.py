"""A search whose PostgreSQL server restarts while a trial runs loses no trial: the worker and
the trial reconnect, or the worker stops with one line and a rerun of the same command finishes
the study. The server is this test's own (initdb + pg_ctl as the postgres user, on its own port
and folder), never the shared one on 5432."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.callbacks import callback_flag
from tests.conftest import ROOT, service_missing
from tests.faults import record_row
from tests.test_search import GRU, SMALL, search, space_file

PORT = 55432


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or where Debian's package puts them."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return folders[-1] if folders else None


def as_postgres(command: str) -> subprocess.CompletedProcess:
    path = f"{postgres_bin()}:/usr/bin:/bin"
    return subprocess.run(["su", "postgres", "-c", f"PATH={path} {command}"],
                          capture_output=True, text=True)  # fmt: skip


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL server of this test: its URL and folder (data/, log)."""
    if os.geteuid() != 0 or postgres_bin() is None:
        service_missing("needs root and PostgreSQL's initdb and pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    made = as_postgres(f"initdb -D {data} --auth=trust -U postgres")
    assert made.returncode == 0, made.stderr
    options = f"-p {PORT} -k {folder} -c listen_addresses=localhost"
    started = as_postgres(f"pg_ctl -D {data} -o '{options}' -l {folder}/log -w start")
    assert started.returncode == 0, started.stderr
    try:
        created = as_postgres(f"createdb -h {folder} -p {PORT} search")
        assert created.returncode == 0, created.stderr
        yield f"postgresql+psycopg://postgres@localhost:{PORT}/search", folder
    finally:
        as_postgres(f"pg_ctl -D {data} -m immediate -w stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_postgresql_restart_mid_trial_loses_no_trial(
    own_postgres: tuple[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, folder = own_postgres
    space = space_file(tmp_path)
    args = ["-c", GRU, "--space", space, "--storage", url, "--trials", 3, "--pruner", "none"]
    args += [*SMALL, "--heartbeat", 0.5, "--stale_after", 3]
    args += callback_flag("SlowBatches", seconds=0.3, progress="progress")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "project.search", *map(str, args)],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith("trial 1 ("):
            break
    else:
        raise AssertionError(f"trial 1 never started: {process.communicate()[1][-3000:]}")
    time.sleep(1.0)  # mid-trial
    # -l: the server's output to its log, not to this test's pipe (which would then never end)
    restarted = as_postgres(f"pg_ctl -D {folder}/data -l {folder}/log -m fast -w restart")
    assert restarted.returncode == 0, restarted.stderr
    started = time.monotonic()
    out, err = process.communicate(timeout=600)
    seconds = time.monotonic() - started
    assert "Traceback" not in err, err[-3000:]
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    if process.returncode != 0:  # failed cleanly: one line, and a rerun finishes the study
        assert len(errors) == 1, err[-3000:]
        rerun = search(tmp_path, *args)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = optuna.load_study(study_name="space", storage=url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    lost = [t for t in trials if t.state == TrialState.FAIL and "over_budget" not in t.user_attrs
            and not any(r.user_attrs.get("retry_of") == t.number for r in trials)]  # fmt: skip
    record_row(request.node.nodeid, "search_database", "server_restart", process.returncode,
               seconds, (errors or ["(none: the worker reconnected)"])[0], True,
               len(complete) == 3 and not lost)  # fmt: skip
    assert len(complete) == 3 and lost == [], [(t.number, t.state) for t in trials]
