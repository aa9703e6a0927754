"""Real faults on a run's folder, for tests/test_faults.py: a small tmpfs under `logs/`, filled
to ENOSPC, remounted read-only, or made unwritable by `chmod`.

Root ignores file modes, so every run here starts through `setpriv` without the capabilities
that let root write anywhere (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER): the process
is still uid 0 but a folder without its write bit refuses it, as it refuses a user.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tests.conftest import ROOT, service_missing

FAULTS = ("disk_full", "read_only", "no_permission")
CAUSES = {
    "disk_full": "No space left on device",
    "read_only": "Read-only file system",
    "no_permission": "Permission denied",
}
AS_A_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def can_mount() -> bool:
    return os.geteuid() == 0 and Path("/proc/filesystems").read_text().count("tmpfs") > 0


@contextmanager
def small_disk(folder: Path, size: str = "32m") -> Iterator[Path]:
    """`folder` as its own tmpfs of `size`: a disk this test may fill and remount."""
    if not can_mount():
        service_missing("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        service_missing(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """Writes zeros into `disk/filler` until the kernel says ENOSPC."""
    filler = disk / "filler"
    block = b"\0" * 2**16
    with suppress(OSError), open(filler, "wb") as file:
        while True:
            file.write(block)
            file.flush()
    return filler


def writable(folder: Path, allowed: bool) -> None:
    """`chmod -R a-w` (or back to u+w) over `folder`."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if allowed else mode & ~0o222)


def strike(fault: str, disk: Path, run: Path) -> Callable[[], None]:
    """Causes `fault` on `disk` (the run folder `run` for permissions); returns its undoing."""
    if fault == "disk_full":
        filler = fill(disk)
        return lambda: filler.unlink()
    if fault == "read_only":
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        return lambda: subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    writable(run, False)
    return lambda: writable(run, True)


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.ckpt"))
    }


@dataclass
class Outcome:
    """What a run struck by a fault did: its exit, output and the files it left."""

    code: int
    seconds: float
    stderr: str
    folder: Path  # the run folder
    before: dict[str, str]  # checkpoints when the fault struck, and their checksums
    after: dict[str, str] = field(default_factory=dict)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def checkpoints_intact(self) -> bool:
        return all(self.after.get(name) == digest for name, digest in self.before.items())


def run_struck(
    place: str, fault: str, disk: Path, args: list[str], cwd: Path, run: Path
) -> Outcome:
    """`python -m project ARGS` in `cwd` (whose `logs/` is `disk`), struck by `fault` just
    before it writes `place` (tests/fault_point.py); the fault is undone once the process ends."""
    signals = cwd / "signals"
    signals.mkdir(exist_ok=True)
    for name in ("paused", "go"):
        (signals / name).unlink(missing_ok=True)
    command = [*AS_A_USER, sys.executable, "-m", "tests.fault_point", place, str(signals), "--"]
    process = subprocess.Popen(
        [*command, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (signals / "paused").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"never reached {place}: {process.communicate()[1][-3000:]}")
        time.sleep(0.05)
    before = checksums(run)
    undo = strike(fault, disk, run)
    try:
        started = time.monotonic()
        (signals / "go").touch()
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        seconds = time.monotonic() - started
    finally:
        undo()
    return Outcome(process.returncode, seconds, stderr, run, before, checksums(run))


def partial_files(folder: Path) -> list[str]:
    """Files a failed write left behind: the project's `.NAME.tmp` and Lightning's `*.tmp*`."""
    return [str(p) for p in folder.rglob("*") if re.search(r"\.tmp($|_)", p.name)]


def record_row(test: str, place: str, fault: str, code: int, seconds: float, error: str,
               intact: bool, resumed_same: bool) -> None:  # fmt: skip
    """A row of docs/faults.md, when scripts/fault_table.py runs the tests (else nothing)."""
    table = os.environ.get("PROJECT_FAULT_TABLE")
    if not table:
        return
    row = dict(place=place, fault=fault, code=code, seconds=round(seconds, 1), error=error,
               intact=intact, resumed_same=resumed_same, test=test,
               date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))  # fmt: skip
    with open(table, "a") as file:
        file.write(json.dumps(row) + "\n")
