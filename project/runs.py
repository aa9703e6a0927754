"""Which folder a run lives in, and when a run continues a checkpoint.

A run is `logs/<experiment>/<version>/`: `version_N` on a workstation, `slurm-<job id>` (or
`slurm-<array job>_<task>`) in a Slurm job. A run continues a checkpoint only when

- the user asks (`--ckpt_path last|best|FILE`), or
- it is the same Slurm job, requeued (`SLURM_RESTART_COUNT` > 0): it resumes its own folder.

Anything else starts at step 0 in a new folder. Lightning on its own resumes any
`hpc_ckpt_*.ckpt` in `trainer.default_root_dir` whenever it detects Slurm; the CLI sets that
folder to the job's own run folder, so another job's checkpoint is never in sight.

Inside a run: `config.yaml` (what started it), `checkpoints/` (`best-*.ckpt`, `last.ckpt`),
`hpc_ckpt_N.ckpt` (a Slurm requeue), `metrics.json` and the TensorBoard event files.
"""

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning import Trainer
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from project.checkpoints import checkpoint_step
from project.errors import UserError

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"


def run_folder(save_dir: str | Path, experiment: str, version: int | str | None) -> Path:
    """`<save_dir>/<experiment>/<version>`; a number is Lightning's `version_N`."""
    return Path(save_dir, experiment, version if isinstance(version, str) else f"version_{version}")


def claim_version(root: str, version: int) -> int:
    """The first `version_N` from `version` on that this process could create under `root`."""
    os.makedirs(root, exist_ok=True)
    while True:
        try:
            os.mkdir(os.path.join(root, f"version_{version}"))
            return version
        except FileExistsError:
            version += 1


def next_version(experiment: Path) -> int:
    """The N after the highest `version_N` of `experiment` (0 for none): Lightning's rule."""
    newest = newest_run(experiment)
    return 0 if newest is None else int(newest.name.removeprefix("version_")) + 1


def finished_runs(paths: list[Path]) -> list[Path]:
    """The run folders in or under `paths` that hold a `metrics.json`."""
    return sorted({metrics.parent for path in paths for metrics in path.rglob(METRICS)})


def checkpoints_of(run: Path) -> Path:
    """The folder of a run's `best-*.ckpt` and `last.ckpt`."""
    return run / CHECKPOINTS


def newest_run(experiment: Path) -> Path | None:
    """The newest workstation run `version_N` of `experiment` (`logs/<experiment>`)."""
    numbers = {run: run.name.removeprefix("version_") for run in experiment.glob("version_*")}
    runs = [run for run, number in numbers.items() if number.isdigit()]
    return max(runs, key=lambda run: int(numbers[run]), default=None)


def run_of_files(files: list[Path], checkpoint: Path) -> Path | None:
    """The run a command is about: that of a config file that sits in a run folder (its own
    `config.yaml`), else that of the checkpoint."""
    runs = [f.parent for f in files if checkpoints_of(f.parent).is_dir()]
    return runs[0] if runs else run_of_checkpoint(checkpoint)


def named_checkpoint(run: Path, name: str) -> Path:
    """`best` (the run's best checkpoint) or `last` (the newest it can resume from) as a file."""
    if name == "last":
        latest = latest_checkpoint(run)
        if latest is None:
            raise UserError(f"{checkpoints_of(run)} holds no last.ckpt")
        return latest
    best = best_checkpoints(run)
    if not best:
        raise UserError(f"{checkpoints_of(run)} holds no best*.ckpt")
    return best[-1]


def best_checkpoints(run: Path) -> list[Path]:
    return sorted(checkpoints_of(run).glob("best*.ckpt"))


def holds(run: str | Path, checkpoint: str | Path) -> bool:
    """Whether `checkpoint` lies inside the run folder `run`."""
    return Path(run).resolve() in Path(checkpoint).resolve().parents


def beside_checkpoint(checkpoint: Path) -> Path:
    """Where files made from a checkpoint go: its run folder, or the folder it is in."""
    parent = checkpoint.parent
    return parent.parent if parent.name == CHECKPOINTS else parent


def purge_step(run: Path) -> int | None:
    """The step TensorBoard hides the curves from, for a new fit in `run`: 0 (the mark it
    ignores) in a new folder, none in a folder that has curves (a requeued Slurm job's), where a
    mark at 0 would hide them all. A resumed run's is its checkpoint's step."""
    return None if any(run.glob("events.out.tfevents.*")) else 0


def run_folder_on_rank_zero(trainer: Trainer) -> Path | None:
    """The folder `trainer.log_dir` names, for code that only rank 0 runs: `trainer.log_dir` is a
    broadcast under DDP, which waits forever for the ranks that never ask."""
    logger = trainer.logger  # the first logger
    if logger is None:
        return Path(trainer.default_root_dir)
    if isinstance(logger, TensorBoardLogger | CSVLogger):
        return Path(logger.log_dir)
    return None if logger.save_dir is None else Path(logger.save_dir)


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
    while (candidates[-1] / CONFIG).exists():
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
    found = [*checkpoints_of(run).glob("last*.ckpt"), *hpc_checkpoints(run)]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file belongs to: `<run>/checkpoints/*.ckpt` or
    `<run>/hpc_ckpt_N.ckpt`, where `<run>` holds the run's `config.yaml`."""
    run = beside_checkpoint(checkpoint)
    in_a_run = run != checkpoint.parent or checkpoint.name.startswith("hpc_ckpt_")
    return run if in_a_run and (run / CONFIG).is_file() else None


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
    saved = yaml.safe_load((run / CONFIG).read_text()).get("data") or {}
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


def main(argv: list[str]) -> int:
    """`python -m project.runs newest logs/<experiment>` prints the newest run folder (for
    `make resume`); exits 1 when there is none."""
    if len(argv) != 2 or argv[0] != "newest":
        print("usage: python -m project.runs newest logs/<experiment>", file=sys.stderr)
        return 2
    run = newest_run(Path(argv[1]))
    if run is None:
        return 1
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
