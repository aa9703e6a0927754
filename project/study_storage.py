"""Where a search keeps its study: an Optuna storage URL, or a journal file that stays whole
lines on a full disk and after a kill mid-write; storage calls tried again while a database
server restarts. Used by the search (project/search/) and by a trial's reporter
(project/callbacks/trial_reporter.py), so it sits below both.

Optuna (5.0) appends a journal line with one `write`; a full disk or a kill can leave part of
it, without its newline. Optuna's reader skips such a last line, but the next append is glued
to it and the journal then fails to load (`JSONDecodeError`): a study lost to one full disk.
Here a failed append and a journal opened with a partial last line are cut back to the last
whole line, under the journal's own lock.
"""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock


class WholeLinesJournal(JournalFileBackend):
    def __init__(self, file_path: str) -> None:
        self.lock = JournalFileSymlinkLock(file_path)  # Optuna's default, kept to repair under
        super().__init__(file_path, lock_obj=self.lock)
        self.path = Path(file_path)
        self.drop_partial_line()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError:
            self.drop_partial_line()
            raise

    def drop_partial_line(self) -> None:
        """Cuts the journal after its last newline, if it ends in part of a line."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        try:
            self.lock.acquire()
        except OSError:  # a read-only or refused folder: nothing can have been written either
            return
        try:
            with open(self.path, "rb+") as file:
                size = file.seek(0, os.SEEK_END)
                tail = b""
                while not tail.count(b"\n") and len(tail) < size:  # back to the last newline
                    step = min(size - len(tail), 1 << 16)
                    file.seek(size - len(tail) - step)
                    tail = file.read(step) + tail
                if tail.endswith(b"\n"):
                    return
                whole = size - len(tail) + tail.rfind(b"\n") + 1
                file.truncate(whole)
        except OSError:  # read-only: it cannot be cut, and nothing was written to it
            return
        finally:
            self.lock.release()


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
