"""Where a search keeps its study: an Optuna storage URL, or a journal file that stays whole
lines on a full disk and after a kill mid-write, and whose lock a fault cannot leave spinning;
storage calls tried again while a database server restarts. Used by the search
(project/search/) and by a trial's reporter (project/callbacks/trial_reporter.py), so it sits
below both.

Optuna (5.1) appends a journal line with one `write`; a full disk or a kill can leave part of
it, without its newline. Optuna's reader skips such a last line, but the next append is glued
to it and the journal then fails to load (`JSONDecodeError`): a study lost to one full disk.
Here a failed append and a journal opened with a partial last line are cut back to the last
whole line, under the journal's own lock.

Optuna's lock (a symlink `journal.log.lock`) has two traps on a read-only or refused folder:
releasing it fails (`RuntimeError: did not possess lock`, the disk's error lost) and leaves the
link; every other writer then waits for it, and once its grace period is over, fails to break
it and tries again at once, forever (100% CPU, a warning a millisecond). `JournalLock` raises
the disk's error instead, naming the journal, and breaks a lock left by a fault once the fault
is gone.
"""

import errno
import json
import os
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock


class JournalLock(JournalFileSymlinkLock):
    """Optuna's symlink lock, the same file (a plain Optuna process excludes with it too), that
    raises a full, read-only or refused disk's error naming the journal instead of spinning."""

    def acquire(self) -> bool:
        pause, seen, since = 0.001, None, time.monotonic()
        while True:
            try:
                os.symlink(self._lock_target_file, self._lock_file)
                return True
            except FileExistsError:  # held, or left by a fault: no one removes it before
                self.raise_if_unwritable()  # the fault is gone, so no waiting for it
            except OSError as error:
                raise self.named(error) from None
            try:
                stamp = os.lstat(self._lock_file)
            except FileNotFoundError:  # released meanwhile
                continue
            # held for the time of one write; a lock unchanged for the grace period (measured
            # here, not by the file's clock: an NFS server's may differ) was left by a process
            # killed, or struck by a fault, while holding it
            if (stamp.st_ino, stamp.st_mtime_ns) != seen:
                seen, since = (stamp.st_ino, stamp.st_mtime_ns), time.monotonic()
            elif time.monotonic() - since > (self.grace_period or float("inf")):
                self.remove()
                continue
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def release(self) -> None:
        # broken by another process after our grace period: nothing left to release
        self.remove()

    def remove(self) -> None:
        """Removes the lock as Optuna does: renamed first (of two processes breaking it, one
        wins), then deleted; a lock already gone (broken by another) is left so."""
        moved = f"{self._lock_file}{uuid.uuid4()}.rename"
        try:
            os.rename(self._lock_file, moved)
        except FileNotFoundError:
            return
        except OSError as error:
            raise self.named(error) from None
        with suppress(FileNotFoundError):
            os.unlink(moved)

    def raise_if_unwritable(self) -> None:
        folder = os.path.dirname(os.path.abspath(self._lock_file))
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            raise self.named(OSError(errno.EROFS, os.strerror(errno.EROFS)))
        if not os.access(folder, os.W_OK):
            raise self.named(OSError(errno.EACCES, os.strerror(errno.EACCES)))

    def named(self, error: OSError) -> OSError:
        """The error as the journal's (the lock is its part): `cannot write journal.log: …`."""
        return type(error)(error.errno, error.strerror, self._lock_target_file)


class WholeLinesJournal(JournalFileBackend):
    def __init__(self, file_path: str) -> None:
        self.lock = JournalLock(file_path)
        super().__init__(file_path, lock_obj=self.lock)
        self.path = Path(file_path)
        with suppress(OSError):  # a read-only journal still reads (a report, a finished study)
            self.lock.acquire()
            try:
                self.drop_partial_line()
            finally:
                self.lock.release()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        # Optuna's own append, with the lock's and the write's faults handled
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self.lock.acquire()
        try:
            with open(self.path, "ab") as file:
                file.write(text.encode("utf-8"))
                file.flush()
                os.fsync(file.fileno())
        except BaseException as error:
            with suppress(OSError):  # read-only: nothing was written either
                self.drop_partial_line()
            with suppress(OSError):  # left behind: broken after the grace period, once fixed
                self.lock.release()
            if isinstance(error, OSError) and error.filename is None:
                error.filename = str(self.path)  # a failed write or flush names no file
            raise
        self.lock.release()

    def drop_partial_line(self) -> None:
        """Cuts the journal after its last newline, if it ends in part of a line (the lock
        held)."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as file:
            size = file.seek(0, os.SEEK_END)
            tail = b""
            while not tail.count(b"\n") and len(tail) < size:  # back to the last newline
                step = min(size - len(tail), 1 << 16)
                file.seek(size - len(tail) - step)
                tail = file.read(step) + tail
            if tail and not tail.endswith(b"\n"):
                file.truncate(size - len(tail) + tail.rfind(b"\n") + 1)


T = TypeVar("T")
# a database server restarted or briefly unreachable: how long a storage call is tried again
PATIENCE = 120.0


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage URL, or a journal file path (`*.log`): a file, no server, safe for
    several processes and on a shared filesystem (Optuna's file lock), and on a full disk."""
    if "://" in url:
        # a connection the server dropped (restarted) is replaced before use, not failed on
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    return optuna.storages.JournalStorage(WholeLinesJournal(url))


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a database storage raises when its server is gone (Optuna wraps some errors)."""
    import sqlalchemy.exc

    return (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)


def patiently(call: Callable[[], T], patience: float = PATIENCE) -> T:
    """`call()`, tried again every second while the storage's server is unreachable (a
    restart), for up to `patience` seconds; then its error goes on."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except storage_errors():
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
