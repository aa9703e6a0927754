"""`python -m project`: the command, its one-line errors and warnings."""

import logging
import sys
import warnings
from pathlib import Path

import torch

from project.callbacks.crashes import crash_line
from project.cli.app import make_cli
from project.cli.errors import user_error_in
from project.cli.lightning_noise import ignore_lightning_noise
from project.launch_checks import default_threads


def main(args: list[str] | None = None) -> None:
    # "Seed set to N" would precede every one-line error; the seed is in the saved config.yaml
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    ignore_lightning_noise()
    warnings.formatwarning = one_line_for_ours
    default_threads()
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
            raise
        print(f"error: {' '.join(str(cause).split())}", file=sys.stderr)  # one line
        sys.exit(2)
    # Lightning destroys only NCCL process groups at exit; a gloo group left to interpreter
    # shutdown can abort the process after a finished run ("terminate called without an
    # active exception", pytorch/pytorch#190489). Only after success: on an error the other
    # ranks may never join the collective destroy.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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
