"""Runs started as a user starts them on several processes: `scripts/torchrun.sh` agents (one per
node, all on this machine), and a kill of one of a run's processes once it reached a step."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.callbacks import callback_flag
from tests.conftest import ROOT

TORCHRUN = ROOT / "scripts" / "torchrun.sh"
# what an earlier run in this process (or a Slurm job running the tests) left in the environment
LAUNCH_VARIABLES = ("PL_", "MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_")
LAUNCH_VARIABLES += ("TORCHELASTIC",)


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's python
    env["PYTHONPATH"] = str(ROOT)  # tests.callbacks
    return env | extra


def torchrun_nodes(
    args: list, cwd: Path, nodes: int, per_node: int, port: str, name: str = "node"
) -> list[subprocess.Popen]:
    """`NNODES=nodes NODE_RANK=i scripts/torchrun.sh ARGS` for each node i, on this machine
    (MASTER_ADDR 127.0.0.1), in `cwd` (the filesystem the nodes share); each agent's output goes
    to `<cwd>/<name><i>.log`."""
    agents = []
    for node in range(nodes):
        env = clean_environment(
            NNODES=str(nodes), NODE_RANK=str(node), NPROC_PER_NODE=str(per_node), MASTER_PORT=port
        )
        log = (cwd / f"{name}{node}.log").open("w")
        command = [TORCHRUN, *args]
        agents.append(
            subprocess.Popen(
                list(map(str, command)), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        )
    return agents


def finish(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    """The exit codes, once every process ended (killed, and the test failed, after `timeout`)."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def watch(folder: Path) -> list[str]:
    """The flag that makes every rank note `<pid> <step>` in `folder` (`tests.callbacks`)."""
    return callback_flag("ProcessIds", folder=str(folder))


def wait_for_step(
    folder: Path, rank: int, step: int, running: list[subprocess.Popen], timeout: float = 240
) -> int:
    """The pid of `rank` once it reached `step` (its note in `folder`, see `watch`)."""
    deadline = time.monotonic() + timeout
    note = folder / f"rank{rank}"
    while True:
        text = note.read_text().split() if note.exists() else []
        if len(text) == 2 and int(text[1]) >= step:
            return int(text[0])
        assert all(p.poll() is None for p in running), "a process ended before the step"
        assert time.monotonic() < deadline, f"rank {rank} never reached step {step}"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The processes `pid` started (a training process's DataLoader workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            # the fields after the name (which may hold spaces) are: state, parent pid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def kill(pid: int) -> float:
    """SIGKILL, as the out-of-memory killer sends it; returns when (time.monotonic)."""
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()
