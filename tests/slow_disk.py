"""A process that dies while it writes a checkpoint: `python -m tests.slow_disk IO TARGET STALLED`.

It saves checkpoint A to TARGET with IO (`atomic`: ours, `lightning`: Lightning's default), then
starts saving checkpoint B through a slow disk: the first file opened for writing in TARGET's
folder stalls after 1 MB, STALLED is created, and the process sleeps until the test kills it.
"""

import builtins
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.checkpoints import AtomicCheckpointIO

SIZE = 2**20  # float32 values: a 4 MB checkpoint
STALL_AFTER = 2**20  # bytes written before the disk stalls


def checkpoint(fill: float) -> dict:
    return {"state_dict": {"w": torch.full((SIZE,), fill)}, "global_step": int(fill)}


class StallingFile:
    """A file whose writes stop, for good, once STALL_AFTER bytes are on disk."""

    def __init__(self, file: Any, stalled: Path) -> None:
        self.file, self.stalled, self.written = file, stalled, 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        room = max(STALL_AFTER - self.written, 0)
        self.file.write(view[:room])
        self.written += min(room, len(view))
        if self.written >= STALL_AFTER:
            self.file.flush()  # what a real disk holds when the kill comes
            self.stalled.touch()
            time.sleep(600)
        return len(view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> "StallingFile":
        return self

    def __exit__(self, *error: object) -> None:
        self.file.close()


def slow_disk(folder: Path, stalled: Path) -> None:
    real_open = builtins.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        if writing and isinstance(file, str | Path) and Path(file).resolve().parent == folder:
            return StallingFile(opened, stalled)
        return opened

    builtins.open = open_
    # shutil copies with os.sendfile when it can, in the kernel, out of the slow disk's reach
    shutil._USE_CP_SENDFILE = False  # type: ignore[attr-defined]


if __name__ == "__main__":
    io_name, target, stalled = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    io = AtomicCheckpointIO() if io_name == "atomic" else TorchCheckpointIO()
    io.save_checkpoint(checkpoint(1.0), target)
    slow_disk(target.parent.resolve(), stalled)
    io.save_checkpoint(checkpoint(2.0), target)
    print("the save of checkpoint B never stalled", file=sys.stderr)
    sys.exit(3)
