"""project/files.py on a real small disk (a tmpfs, as root): a write that a full or read-only
disk stops raises an error naming the file, leaves the previous file whole and no partial one.
The same faults struck at each place a whole run writes are the slow tier, tests/test_faults.py."""

import errno
from pathlib import Path

import pytest
import torch

from project.checkpoints import AtomicCheckpointIO
from project.errors import chain_of
from project.files import disk_error_line, written_whole
from tests.faults import partial_files, small_disk, strike

BIG = 2**22  # float32 values: a 16 MB write, more than the 8 MB disk can take


@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
@pytest.mark.parametrize("writer", ["text", "checkpoint"])
def test_a_write_stopped_by_the_disk_keeps_the_previous_file(
    fault: str, writer: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", size="8m") as disk:
        path = disk / ("metrics.json" if writer == "text" else "last.ckpt")

        def write(fill: float) -> None:
            if writer == "text":
                with written_whole(path) as file:
                    file.write(str(fill) * (BIG if fill else 1))
            else:
                AtomicCheckpointIO().save_checkpoint({"w": torch.full((BIG if fill else 1,), fill)},
                                                     path)  # fmt: skip

        write(0.0)
        before = path.read_bytes()
        undo = strike(fault, disk, disk) if fault == "read_only" else (lambda: None)
        try:
            with pytest.raises(Exception) as raised:  # torch raises its own over the OSError
                write(1.0)  # 16 MB on an 8 MB disk, or on a read-only one
        finally:
            undo()
        (error,) = [e for e in chain_of(raised.value) if isinstance(e, OSError)][-1:]
        assert error.errno == (errno.ENOSPC if fault == "disk_full" else errno.EROFS)
        assert disk_error_line(error).startswith(f"cannot write {path}: ")
        assert path.read_bytes() == before
        assert partial_files(disk) == []
