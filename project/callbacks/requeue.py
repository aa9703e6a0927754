"""Checkpoint and requeue a Slurm job when it is told to stop, between two training batches."""

import atexit
import signal
import subprocess
import sys
from pathlib import Path

from lightning import Trainer

from project.callbacks.signals import StopOnSignal
from project.runs import hpc_checkpoints, next_hpc_checkpoint, slurm_job


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
