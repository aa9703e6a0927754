"""`python -m project`: the command, its one-line errors and warnings."""

import logging
import os
import sys
import threading
import warnings
from pathlib import Path

import torch

from project.cli.app import make_cli
from project.cli.errors import user_error_in
from project.cli.lightning_noise import ignore_lightning_noise
from project.crashes import crash_line
from project.errors import chain_of
from project.files import EXIT_CODE, disk_error_line, is_disk_error
from project.launch_checks import default_threads


def main(args: list[str] | None = None) -> None:
    # "Seed set to N" would precede every one-line error; the seed is in the saved config.yaml
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    ignore_lightning_noise()
    warnings.formatwarning = one_line_for_ours
    default_threads()
    thread_errors = quiet_thread_disk_errors()
    try:
        words = sys.argv[1:] if args is None else args
        if words[:1] == ["tune"]:  # Lightning's finders: not a Trainer method LightningCLI runs
            from project.cli.tune import tune

            tune(words[1:])
        else:
            make_cli(args)
    except Exception as error:
        crash = crash_line(error)  # another process of the run was killed: not a mistake
        if crash is not None:
            print(crash, file=sys.stderr)
            sys.exit(1)
        cause = user_error_in(error)
        if cause is None:
            # the machine's fault (a full disk, a read-only or refused folder), here or in a
            # writer thread (TensorBoard's): one line naming the file, not a traceback. The
            # innermost is the first to happen; what failed after it (TensorBoard's flush while
            # Lightning stopped the run) only repeats it
            faults = [e for e in chain_of(error) if is_disk_error(e)] or thread_errors[-1:]
            if not faults:
                raise
            fault = faults[-1]
            print(f"error: {disk_error_line(fault)}", file=sys.stderr)
            sys.exit(EXIT_CODE)
        print(f"error: {' '.join(str(cause).split())}", file=sys.stderr)  # one line
        sys.exit(2)
    if thread_errors:  # a writer thread lost data although the run itself ended
        print(f"error: {disk_error_line(thread_errors[0])}", file=sys.stderr)
        sys.exit(EXIT_CODE)
    # Lightning destroys only NCCL process groups at exit; a gloo group left to interpreter
    # shutdown can abort the process after a finished run ("terminate called without an
    # active exception", pytorch/pytorch#190489). Only after success: on an error the other
    # ranks may never join the collective destroy.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def quiet_thread_disk_errors() -> list[OSError]:
    """The disk errors of other threads, kept instead of printed as tracebacks. TensorBoard's
    event writer thread dies on a full disk and hands the same error to the main thread at its
    next write, which then stops the run; other errors keep Python's report."""
    caught: list[OSError] = []
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        error = args.exc_value
        if isinstance(error, OSError) and is_disk_error(error):
            if error.filename is None:  # the main thread gets this same error: name the file
                error.filename = written_by(args.thread)
            caught.append(error)
        else:
            default(args)

    threading.excepthook = hook
    return caught


def written_by(thread: threading.Thread | None) -> str | None:
    """The file a writer thread writes: TensorBoard's (tensorboard 2.x's `_AsyncWriterThread`
    holds a RecordWriter over a GFile, which knows its name; read defensively, it is private)."""
    record_writer = getattr(thread, "_record_writer", None)
    name = getattr(getattr(record_writer, "_writer", None), "filename", None)
    return os.fsdecode(name) if isinstance(name, bytes | str) else None


PACKAGE = Path(__file__).resolve().parents[1]
PYTHON_FORMAT = warnings.formatwarning


def one_line_for_ours(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """This project's own warnings (e.g. data that looks zero-padded) as one line: Python would
    add the source line that raised it, which tells a user nothing."""
    if Path(filename).resolve().is_relative_to(PACKAGE):
        return f"warning: {message}\n"
    return PYTHON_FORMAT(message, category, filename, lineno, line)
