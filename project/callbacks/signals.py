"""Save and stop on a signal, at a step boundary every rank agrees on: `StopOnSignal`, the base
of `LastCheckpoint` (Ctrl-C, SIGTERM: project/callbacks/checkpoints.py) and of `Requeue` (Slurm's
warning before a time limit: checkpoint, requeue the job, exit)."""

import atexit
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from project.errors import UserError
from project.runs import hpc_checkpoints, next_hpc_checkpoint, slurm_job


def as_signal(name: str) -> signal.Signals:
    """`SIGTERM`, `sigterm` or `TERM` as a signal; a one-line error for an unknown name."""
    full = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    if full not in signal.Signals.__members__:
        raise UserError(f"unknown signal {name!r}: use a name such as SIGINT, SIGTERM or SIGUSR1")
    return signal.Signals[full]


def any_rank(trainer: Trainer, *flags: bool) -> list[bool]:
    """Each flag, true if it is true on any rank: one collective for all of them."""
    if trainer.world_size == 1:
        return list(flags)
    flags_here = torch.tensor(flags, dtype=torch.float32, device=trainer.strategy.root_device)
    summed = trainer.strategy.reduce(flags_here, reduce_op="sum")
    return [value > 0 for value in summed.tolist()]


def after_optimizer_step(trainer: Trainer, batch_idx: int) -> bool:
    """Whether the batch that just ended made an optimizer step, so a checkpoint taken now holds
    no half-accumulated gradients (Lightning also steps on an epoch's last batch)."""
    last = trainer.is_last_batch or batch_idx + 1 >= trainer.num_training_batches
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or last


class StopOnSignal(Callback):
    """Base of the callbacks that save a checkpoint and stop when the process gets a signal.

    The handler only notes the signal. After the next optimizer step, the ranks agree on it
    (a collective: they may get it during different batches, and all of them must stop after the
    same one), `save` writes the checkpoint, and the run stops before the following batch, once
    the step's metrics are logged. Saving inside the handler instead, as Lightning's Slurm
    auto-requeue does, saves wherever the interpreter happens to be (between backward and the
    optimizer step, halfway through Adam's update), so the checkpoint may not match its own step
    counters; under DDP the save's barrier can meet another rank's gradient all-reduce; and
    DataLoader workers, forked after the handler is set, run it too.
    """

    def __init__(self, signals: Sequence[str]) -> None:
        self.signums = [as_signal(name) for name in signals]
        self.received: signal.Signals | None = None
        self._pid: int | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._stop: tuple[str, int] | None = None  # (message, exit code) once saved

    def save(self, trainer: Trainer, signum: signal.Signals) -> tuple[str, int]:
        """Saves the checkpoint (every rank calls it) and returns the line to print and the
        exit code."""
        raise NotImplementedError

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # forked DataLoader workers inherit this handler (a terminal's Ctrl-C and Slurm signal
        # every process): only the trainer's own process takes note
        if os.getpid() != self._pid:
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C again: Lightning's own shutdown, nothing saved
        self.received = signal.Signals(signum)
        # os.write, not print: a handler that prints can land inside another print
        os.write(2, f"\n{self.received.name}: stopping after the current step\n".encode())

    def _install(self) -> None:
        # Python lets only the main thread set handlers
        if threading.current_thread() is not threading.main_thread():
            return
        self._pid = os.getpid()
        for signum in self.signums:
            previous = signal.signal(signum, self._on_signal)
            self._previous.setdefault(signum, previous)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._install()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning sets its own SIGTERM handler after `setup` (2.6 has no switch for it); it
        # would stop the run at the end of the batch (or in the middle of a validation) without
        # saving: take the signal back (tests/test_lightning_api.py checks that this suffices)
        self._install()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, error: BaseException
    ) -> None:
        self._restore()  # Lightning skips `teardown` hooks after an exception

    def signalled(self, trainer: Trainer, batch_idx: int, *more: bool) -> list[bool]:
        """[any rank was signalled, *more (each true on any rank)], agreed after an optimizer
        step; all false between the batches of an accumulated step."""
        if self._stop is not None or not after_optimizer_step(trainer, batch_idx):
            return [False] * (1 + len(more))
        return any_rank(trainer, self.received is not None, *more)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        if self.signalled(trainer, batch_idx)[0]:
            self._stop = self.save(trainer, self.received or self.signums[0])

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        if self._stop is None:
            return
        message, code = self._stop
        if trainer.is_global_zero:
            print(message, file=sys.stderr, flush=True)
        sys.exit(code)  # Lightning tears down (on_exception hooks, workers, loggers) and re-raises


class Requeue(StopOnSignal):
    """On `signal` (default SIGUSR1, as sent by `sbatch --signal=USR1@90` or
    `scancel --signal=USR1 JOB`): after the current optimizer step, every rank stops,
    `<default_root_dir>/hpc_ckpt_N.ckpt` is saved, the Slurm job is requeued, and the process exits.
    The requeued job's `fit` finds that file and resumes from it, mid-epoch included.

    Why not Lightning's `SLURMEnvironment(auto_requeue=True)`: it saves inside the signal handler
    (`StopOnSignal` says what goes wrong then). Use this with `SLURMEnvironment(auto_requeue=False)`
    (configs/trainer/slurm.yaml) so that Lightning leaves the signal alone.
    Outside Slurm the signal still saves the checkpoint and stops; resume with `--ckpt_path`.
    """

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        super().__init__([signal_name])

    def save(self, trainer: Trainer, signum: signal.Signals) -> tuple[str, int]:
        path = next_hpc_checkpoint(trainer.default_root_dir)
        # every rank calls it; rank 0 writes; it ends with a barrier
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:  # each requeue supersedes the previous checkpoints
            for older in hpc_checkpoints(Path(trainer.default_root_dir)):
                if older != path:
                    older.unlink()
        job = slurm_job()
        if trainer.is_global_zero and job is not None:
            # requeueing makes Slurm send SIGTERM to every process of the job: do it at exit,
            # once Lightning's teardown has stopped the DataLoader workers, which would otherwise
            # die mid-batch and fill the log with tracebacks
            atexit.register(requeue, job, path)
        message = f"Stopped on {signum.name} after step {trainer.global_step}: saved {path}; " + (
            f"requeueing Slurm job {job}" if job else f"resume with --ckpt_path {path}"
        )
        return message, 0  # the job continues elsewhere: not a failure


def requeue(job: str, checkpoint: Path) -> None:
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        print(
            f"error: `scontrol requeue {job}` failed ({result.stderr.strip()}); "
            f"resubmit with --ckpt_path {checkpoint}",
            file=sys.stderr,
        )
