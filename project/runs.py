"""Which folder a run lives in, and when a run continues a checkpoint.

A run is `logs/<experiment>/<version>/`: `version_N` on a workstation, `slurm-<job id>` (or
`slurm-<array job>_<task>`) in a Slurm job. A run continues a checkpoint only when

- the user asks (`--ckpt_path last|best|FILE`), or
- it is the same Slurm job, requeued (`SLURM_RESTART_COUNT` > 0): it resumes its own folder.

Anything else starts at step 0 in a new folder. Lightning on its own resumes any
`hpc_ckpt_*.ckpt` in `trainer.default_root_dir` whenever it detects Slurm; the CLI sets that
folder to the job's own run folder, so another job's checkpoint is never in sight.
"""

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment


def slurm_job() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` in a job array, else the job id."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_restarts() -> int:
    """How often Slurm requeued this job (0 at its first start)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def slurm_run_folder(experiment: Path) -> Path | None:
    """This Slurm job's run folder under `experiment` (`logs/<experiment>`), None outside a job.

    Normally `slurm-<job>`. Job ids can come back (a cluster whose controller state was reset):
    a first start that finds the folder already used takes `slurm-<job>.1`, `.2`, … and a
    requeued job the newest of them, so a new job never writes into an old job's run. Every
    rank decides alike: nothing is written into the folder before all ranks have started.
    """
    job = slurm_job()
    if job is None or not SLURMEnvironment.detect():
        return None
    candidates = [experiment / f"slurm-{job}"]
    while (candidates[-1] / "config.yaml").exists():
        candidates.append(experiment / f"slurm-{job}.{len(candidates)}")
    if slurm_restarts() > 0 and len(candidates) > 1:
        return candidates[-2]  # the requeued job's own folder, the newest used one
    return candidates[-1]


def hpc_checkpoints(run: Path) -> list[Path]:
    """The requeue checkpoints `hpc_ckpt_N.ckpt` of a run, lowest N first."""
    return sorted(run.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.removeprefix("hpc_ckpt_")))


def next_hpc_checkpoint(folder: str | Path) -> Path:
    """`<folder>/hpc_ckpt_<N+1>.ckpt`, after the highest N there."""
    existing = hpc_checkpoints(Path(folder))
    number = int(existing[-1].stem.removeprefix("hpc_ckpt_")) if existing else 0
    return Path(folder) / f"hpc_ckpt_{number + 1}.ckpt"


def latest_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint a run can resume from: `checkpoints/last*.ckpt` (per epoch, periodic,
    on Ctrl-C or SIGTERM) or `hpc_ckpt_N.ckpt` (a Slurm requeue)."""
    found = [*(run / "checkpoints").glob("last*.ckpt"), *hpc_checkpoints(run)]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file belongs to: `<run>/checkpoints/*.ckpt` or
    `<run>/hpc_ckpt_N.ckpt`, where `<run>` holds the run's `config.yaml`."""
    parent = checkpoint.parent
    if parent.name == "checkpoints" and (parent.parent / "config.yaml").is_file():
        return parent.parent
    if checkpoint.name.startswith("hpc_ckpt_") and (parent / "config.yaml").is_file():
        return parent
    return None


def checkpoint_step(checkpoint: Path) -> int:
    """The global step a checkpoint was saved at, memory-mapped: the weights are not read."""
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return int(loaded.get("global_step", 0))


def step_after_curves(run: Path) -> int | None:
    """The first step after the training curves of the run (those end at its newest checkpoint)."""
    latest = latest_checkpoint(run)
    # after the last point, not at it: an image at an existing step would replace it
    return None if latest is None else checkpoint_step(latest) + 1


# how a DataModule serves its data, not which data it is
LOADER_SETTINGS = {"batch_size", "num_workers", "pin_memory", "persistent_workers"}


def other_data_name(run: Path, data: dict[str, Any]) -> str | None:
    """A short name for `data` when it is not the data the run was fit on (its `config.yaml`),
    so that results on it are written beside the run's own (`metrics-<name>.json`), never over
    them; None when it is the same data. The name is made of what differs: a file's or
    folder's name, else `key=value`."""
    saved = yaml.safe_load((run / "config.yaml").read_text()).get("data") or {}
    if saved.get("class_path") != data.get("class_path"):
        return str(data.get("class_path", "data")).rpartition(".")[2]
    before, now = saved.get("init_args") or {}, data.get("init_args") or {}
    changed = sorted(k for k in before.keys() | now.keys() - LOADER_SETTINGS
                     if k not in LOADER_SETTINGS and before.get(k) != now.get(k))  # fmt: skip
    if not changed:
        return None
    parts = []
    for key in changed:
        value = now.get(key)
        if isinstance(value, str) and ("/" in value or "." in value):
            parts.append(Path(value).stem or Path(value).name)
        else:
            parts.append(f"{key}={value}")
    return "_".join(parts).replace(" ", "")
