"""Checkpoint and requeue a Slurm job when it is told to stop, between two training batches."""

import atexit
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_info


def next_hpc_checkpoint(folder: str | Path) -> Path:
    """`<folder>/hpc_ckpt_<N+1>.ckpt`; in a Slurm job, `fit` resumes from the highest N there."""
    numbers = [int(p.stem.removeprefix("hpc_ckpt_")) for p in Path(folder).glob("hpc_ckpt_*.ckpt")]
    return Path(folder) / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def slurm_job() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` in a job array, else the job id."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class Requeue(Callback):
    """On `signal` (default SIGUSR1, as sent by `sbatch --signal=USR1@90` or
    `scancel --signal=USR1 JOB`): at the end of the current training batch (of the current
    optimizer step, when gradients accumulate over several batches), every rank stops,
    `<default_root_dir>/hpc_ckpt_N.ckpt` is saved, the Slurm job is requeued, and the process exits.
    The requeued job's `fit` finds that file and resumes from it, mid-epoch included.

    Why not Lightning's `SLURMEnvironment(auto_requeue=True)`: it saves inside the signal handler,
    i.e. wherever the interpreter happens to be (between backward and the optimizer step, halfway
    through Adam's update), so the checkpoint may not match its own step counters; under DDP the
    handler's barrier can meet another rank's gradient all-reduce; and DataLoader workers, forked
    after the handler is set, run it too. Here the handler only raises a flag, and the ranks agree
    on it at a batch boundary. Use it with `SLURMEnvironment(auto_requeue=False)`
    (configs/trainer/slurm.yaml) so that Lightning leaves the signal alone.
    Outside Slurm the signal still saves the checkpoint and stops; resume with `--ckpt_path`.
    """

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        self.signum = signal.Signals[
            signal_name if signal_name.startswith("SIG") else f"SIG{signal_name}"
        ]
        self.requested = False
        self._pid: int | None = None
        self._previous: signal.Handlers | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # forked DataLoader workers inherit this handler (Slurm signals every process of the step):
        # only the trainer's own process takes note
        if os.getpid() == self._pid:
            self.requested = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Python only lets the main thread set handlers; Lightning, finding one set, adds none
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            self._previous = signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        # only after an optimizer step: a checkpoint holds no half-accumulated gradients
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or trainer.is_last_batch
        # a collective: the ranks may get the signal during different batches, and all of them
        # must save and stop after the same one
        if not stepped or not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = next_hpc_checkpoint(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # all ranks call it; rank 0 writes; it ends with a barrier
        if trainer.is_global_zero:  # each requeue supersedes the previous checkpoints
            for older in Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"):
                if older != path:
                    older.unlink()
        job = slurm_job()
        if trainer.is_global_zero and job is not None:
            # requeueing makes Slurm send SIGTERM to every process of the job: do it at exit,
            # once Lightning's teardown has stopped the DataLoader workers, which would otherwise
            # die mid-batch and fill the log with tracebacks
            atexit.register(requeue, job, path)
        rank_zero_info(
            f"Stopped on {self.signum.name} after step {trainer.global_step}: saved {path}; "
            + (f"requeueing Slurm job {job}" if job else f"resume with --ckpt_path {path}")
        )
        sys.exit(0)  # Lightning tears down (on_exception hooks, workers, loggers) and re-raises


def requeue(job: str, checkpoint: Path) -> None:
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        print(
            f"error: `scontrol requeue {job}` failed ({result.stderr.strip()}); "
            f"resubmit with --ckpt_path {checkpoint}",
            file=sys.stderr,
        )
