"""A process of the run killed from outside (the out-of-memory killer, `kill -9`): one line that
says which and how to resume, instead of a traceback.

- A DataLoader worker dies: torch raises `DataLoader worker (pid N) is killed by signal: Killed`
  in the training process at its next batch.
- A DDP rank dies: the other ranks' next collective fails at once (gloo: "Connection reset by
  peer"; the kernel closes a killed process's sockets), and the launcher ends them and names the
  dead rank (torchrun: "Root Cause … rank: 1 … exitcode: -9"; srun with --kill-on-bad-exit:
  "task 1: Killed"). Neither waits for the 30-minute collective timeout, which only a rank that
  is frozen, not dead, would reach.

`add_resume_note` adds the resume command to the exception while the trainer is known (the
`last_checkpoint:` callback calls it: project/callbacks/checkpoints.py); `crash_line` makes the
line that `python -m project` prints (exit code 1). The run loses the steps since its
last `last.ckpt` (every epoch, and every `last_checkpoint.every_n_minutes`).
"""

import re

import torch
from lightning import Trainer

from project.errors import chain_of
from project.runs import CONFIG, run_folder_on_rank_zero, slurm_job

WORKER = re.compile(r"DataLoader worker \(pids?\(?s?\)? ?[\d, ]+\) [^.]*")
LOST_PEER = re.compile(r"Connection (?:reset|closed) by peer|Broken pipe|Socket Timeout")


def what_crashed(error: BaseException) -> str | None:
    """What killed the run, in words, if another process of it died; else None."""
    for link in chain_of(error):
        text = str(link)
        worker = WORKER.search(text)
        if worker:
            return (
                f"{worker.group(0).strip()} (out of memory? fewer data.num_workers or a smaller "
                "batch need less)"
            )
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        lost = LOST_PEER.search(text)
        if distributed and (lost or isinstance(link, torch.distributed.DistError)):
            rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
            reason = lost.group(0) if lost else text.splitlines()[0][:200]
            return (
                f"rank {rank} of {size} lost another rank ({reason}): a process of this run "
                "died (out of memory?); the launcher's log names it"
            )
    return None


def crash_line(error: BaseException) -> str | None:
    """The one `error:` line for a run that another of its processes took down, with the
    resume command `add_resume_note` added; None for any other error."""
    what = what_crashed(error)
    if what is None:
        return None
    notes = [n for link in chain_of(error) for n in getattr(link, "__notes__", [])]
    resume = next((n for n in notes if n.startswith("resume")), "")
    return f"error: {what}" + (f"; {resume}" if resume else "")


def add_resume_note(trainer: Trainer, error: BaseException) -> None:
    """Adds to such an error how to resume the run (called from `on_exception`, which Lightning
    runs on every rank before it re-raises). Nothing here talks to the other ranks: they may be
    gone."""
    if trainer.state.fn != "fit" or what_crashed(error) is None:
        return
    job = slurm_job()
    if job is not None:  # the requeued job resumes from its own run folder
        error.add_note(f"resume: scontrol requeue {job}")
        return
    run = run_folder_on_rank_zero(trainer)
    if run is not None and (run / CONFIG).exists():
        error.add_note(f"resume: python -m project fit -c {run / CONFIG} --ckpt_path last")
