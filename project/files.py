"""Files written whole or not at all, and a full disk, a read-only filesystem or a refused
permission reported as one line that names the file.

A run's files (checkpoints, `metrics.json`, `predictions.csv`, `trial.json`) are written beside
their final name and renamed into place once on disk: a full disk, a kill or a power cut in the
middle leaves the previous file whole and no partial one.
"""

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from project.errors import chain_of

# what the machine, not the program, did wrong: the run stops with one line and exit code 74
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
EXIT_CODE = 74  # EX_IOERR (sysexits.h): distinct from a mistake (2) and a crash (1)


def is_disk_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def disk_error_line(error: OSError) -> str:
    """`cannot write logs/gru/version_0/checkpoints/last.ckpt: No space left on device (ENOSPC)`."""
    # TensorBoard's writer names its file in bytes
    where = os.fsdecode(error.filename) if error.filename is not None else "a file (path unknown)"
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"cannot write {where}: {error.strerror or error} ({name})"


def naming(error: BaseException, path: Path | str, partial: Path | None = None) -> None:
    """Makes `error`'s OSErrors name the file they struck: a failed `write` or `close` names
    none (and torch's writer raises its own error over the OSError). The same objects are
    changed, so that the report finds the first fault where it happened in a chain. A fault in
    writing `partial`, the file that becomes `path`, is named as `path`'s."""
    for cause in chain_of(error):
        if isinstance(cause, OSError) and cause.filename in (None, str(partial)):
            cause.filename = str(path)


@contextmanager
def written_whole(path: Path | str, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """A file opened for writing in place of `path`; `path` is replaced when the block ends,
    flushed to disk, and left as it was when the block fails (the partial file is removed)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.tmp")
    try:
        with open(partial, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.replace(partial, path)
    except BaseException as error:
        with suppress(OSError):  # nothing to remove, or a read-only filesystem
            partial.unlink()
        naming(error, path, partial)
        raise
    with suppress(OSError):  # ... and the rename itself survives a power cut
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
