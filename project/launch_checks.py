"""Launch mistakes caught before any work starts, each reported as one line (`UserError`).

Left alone, depending on the mistake, Lightning waits forever for processes that never start,
trains with fewer processes than asked, or stops with a traceback.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment

from project.errors import UserError


def check_launch(trainer: Namespace | Mapping[str, Any]) -> None:
    """Checks the `trainer:` config against the machine and the Slurm or torchrun launch."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator == "auto":  # Lightning's choice, leaving TPUs and MPS aside
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    plugins = trainer.get("plugins") or []
    plugins = plugins if isinstance(plugins, list) else [plugins]
    if any("SLURMEnvironment" in str(p) for p in plugins) and "SLURM_NTASKS" not in os.environ:
        raise UserError(
            "the SLURMEnvironment plugin (configs/trainer/slurm.yaml) needs a Slurm job started "
            "with tasks: submit with scripts/slurm/train.sbatch, or drop that overlay"
        )
    devices = trainer.get("devices", "auto")
    num_nodes = int(trainer.get("num_nodes") or 1)
    if accelerator in ("gpu", "cuda"):
        count = gpu_count(devices)
    elif accelerator == "cpu":
        count = cpu_processes(devices)
    else:
        return  # TPU, MPS, custom accelerators: Lightning's own checks
    slurm_checks(count, num_nodes)
    torchrun_checks(count, num_nodes)


def run_here(trainer: Namespace) -> list[str]:
    """Makes an evaluation (validate, test, predict) of a run fit elsewhere run on this machine:
    a Slurm job's `config.yaml`, with its SLURMEnvironment plugin, nodes and GPUs, works on a
    login node or a laptop as the run summary promises. Settings are kept where this process is
    part of such a launch (Slurm tasks, torchrun), so the launch checks still apply there.
    Returns what it changed, in words."""
    if SLURMEnvironment.detect() or "TORCHELASTIC_RUN_ID" in os.environ:
        return []
    changes = []
    plugins = trainer.get("plugins") or []
    plugins = plugins if isinstance(plugins, list) else [plugins]
    kept = [p for p in plugins if "SLURMEnvironment" not in str(p)]
    if len(kept) < len(plugins):
        trainer.plugins = kept or None
        changes.append("not in a Slurm job: the SLURMEnvironment plugin is left out")
    if int(trainer.get("num_nodes") or 1) > 1:
        changes.append(f"num_nodes {trainer.num_nodes} → 1 (this machine alone)")
        trainer.num_nodes = 1
    accelerator = str(trainer.get("accelerator") or "auto")
    visible = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and visible == 0:
        changes.append("no GPU here: evaluating on the CPU, in one process")
        trainer.accelerator, trainer.devices, trainer.strategy = "cpu", 1, "auto"
    elif accelerator in ("gpu", "cuda", "auto") and visible > 0:
        devices = trainer.get("devices")
        if isinstance(devices, int | str) and str(devices).isdigit() and int(devices) > visible:
            changes.append(f"devices {devices} → {visible} (the GPUs visible here)")
            trainer.devices = visible
    return changes


def gpu_count(devices: object) -> int:
    visible = torch.cuda.device_count()
    if visible == 0:
        raise UserError(
            "trainer.accelerator is gpu but no GPU is visible here (torch.cuda.device_count() is 0"
            f"{cuda_visible()}); run on a GPU node, or use -c configs/trainer/cpu.yaml"
        )
    if devices in ("auto", -1, "-1", None):
        return visible
    if isinstance(devices, str):  # "2" is a count, "0,2" a list of GPU indices
        devices = (
            [int(i) for i in devices.split(",") if i.strip()] if "," in devices else int(devices)
        )
    if isinstance(devices, list | tuple):
        wanted, asked = len(devices), max(devices) + 1
    else:
        wanted = asked = int(devices)  # type: ignore[arg-type]
    if asked > visible:
        raise UserError(
            f"trainer.devices={devices} asks for {asked} GPUs but {visible} "
            f"{'is' if visible == 1 else 'are'} visible{cuda_visible()}; "
            f"use --trainer.devices {visible} (or -1 for all)"
        )
    return wanted


def cuda_visible() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "" if value is None else f", CUDA_VISIBLE_DEVICES={value!r}"


def cpu_processes(devices: object) -> int:
    """CPU `devices` is a number of training processes, each a full copy of model and data."""
    if devices in ("auto", None):
        return 1
    try:
        count = int(devices)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(
            f"trainer.devices={devices!r}: on the CPU it is a number of processes"
        ) from None
    # Lightning accepts any number; far more processes than cores is a typo (e.g. a GPU count
    # on a CPU run) that starts dozens of processes fighting for the cores and memory. Up to
    # twice the cores is allowed: 3 ranks on 2 cores are slow but check multi-process code
    cores = usable_cores()
    if count < 1 or count > 2 * cores:
        raise UserError(
            f"trainer.devices={devices} CPU processes but this machine offers {cores} cores; "
            f"use 1 to {2 * cores} (--trainer.devices 2 --trainer.strategy ddp for DDP on CPUs)"
        )
    return count


def tasks_per_node() -> int:
    """Tasks on each node: `--ntasks-per-node`, else the (even) spread that Slurm reports."""
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        return int(os.environ["SLURM_NTASKS_PER_NODE"])
    spread = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get(
        "SLURM_TASKS_PER_NODE", "1"
    )
    counts = {int(m) for m in re.findall(r"(\d+)(?:\(x\d+\))?", spread)}  # "2(x3),1" → {2, 1}
    if len(counts) > 1:
        raise UserError(
            f"Slurm spread the tasks unevenly over the nodes ({spread}); "
            "DDP needs the same number on each: use --ntasks-per-node"
        )
    return counts.pop()


def slurm_checks(devices: int, num_nodes: int) -> None:
    if not SLURMEnvironment.detect():
        return
    ntasks = int(os.environ["SLURM_NTASKS"])
    # srun sets SLURM_STEP_ID; the batch script itself (step "batch") has none
    if ntasks > 1 and "SLURM_STEP_ID" not in os.environ:
        raise UserError(
            f"this Slurm job has {ntasks} tasks but python was started without srun, so it would "
            "run once, not once per task: launch it as `srun python -m project ...`"
        )
    per_node = tasks_per_node()
    if per_node != devices:
        raise UserError(
            f"trainer.devices={devices} but Slurm runs {per_node} task(s) per node: Lightning "
            f"needs one task per device; use --trainer.devices {per_node} or "
            f"sbatch --ntasks-per-node={devices}"
        )
    nodes = int(os.environ.get("SLURM_STEP_NUM_NODES") or os.environ.get("SLURM_NNODES", "1"))
    if nodes != num_nodes:
        raise UserError(
            f"trainer.num_nodes={num_nodes} but the Slurm job runs on {nodes} node(s); "
            f"use --trainer.num_nodes {nodes} or sbatch --nodes={num_nodes}"
        )


def torchrun_checks(devices: int, num_nodes: int) -> None:
    """torchrun (scripts/torchrun.sh) sets LOCAL_WORLD_SIZE = --nproc-per-node."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or "LOCAL_WORLD_SIZE" not in os.environ:
        return
    local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
    if local != devices or world != local * num_nodes:
        raise UserError(
            f"trainer.devices={devices} and num_nodes={num_nodes} but torchrun started "
            f"{local} process(es) per node, {world} in all; make devices = --nproc-per-node "
            "and num_nodes = --nnodes"
        )


def usable_cores() -> int:
    """The cores this process may use: Slurm's allocation on a node, else its CPU affinity."""
    allocated = int(os.environ.get("SLURM_CPUS_ON_NODE", 0))
    if allocated:
        return allocated
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> None:
    """One torch thread per process, unless `OMP_NUM_THREADS` says otherwise.

    torch's own default, a thread per core, spins while its threads wait on each other; beside
    other work on the same cores (a second run, a test suite, a neighbour's job) that collapses:
    two default GRU runs side by side on 2 cores took 115 s where one thread each took 9 s. One
    thread costs nothing on the default GRU and is slower only for large CPU models on a machine
    to oneself (docs/benchmarks.md, `scripts/bench/threads_study.py`): there, set OMP_NUM_THREADS.
    Slurm jobs get their allocation (scripts/slurm/*.sbatch), search workers their share."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
