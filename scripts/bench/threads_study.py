"""How torch's CPU threads behave on this machine, quiet and beside other work:

    python scripts/bench/threads_study.py            # both workloads, each setting, each load
    python scripts/bench/threads_study.py --only gru

Each cell trains in a fresh process and reports its wall time (process start included). The
settings: torch's own default (one thread per core, OpenMP's default wait), one thread (the
template's default, `project.launch_checks.default_threads`), and one thread per core with
`OMP_WAIT_POLICY=PASSIVE` (threads sleep instead of spinning while they wait). The loads: none;
`--busy` processes spinning in Python; a neighbour, the same training started beside it with the
same setting (two runs of a search, a test suite beside a training).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from project.launch_checks import usable_cores

ROOT = Path(__file__).resolve().parents[2]
CORES = str(usable_cores())  # torch's own default: a thread for each
SETTINGS = {
    "torch's default (a thread per core)": {"OMP_NUM_THREADS": CORES},
    "one thread (the template's default)": {"OMP_NUM_THREADS": "1"},
    "a thread per core, OMP_WAIT_POLICY=PASSIVE": {
        "OMP_NUM_THREADS": CORES,
        "OMP_WAIT_POLICY": "PASSIVE",
    },
}
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
WORKLOADS = {
    # the default experiment
    "gru": ["-c", "configs/sequence/gru.yaml", "--trainer.max_epochs", "3"],
    "resnet18": [  # ResNet-18 on 32x32 plots: large convolutions
        *("-c", "configs/image/finetune_stage1.yaml", "--trainer.max_steps", "40"),
        *("--trainer.limit_val_batches", "2"),
    ],
}
BUSY = "while True: pass"


def training(args: list[str], env: dict[str, str], folder: str) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    command = [sys.executable, "-m", "project", "fit", *args, *QUIET]
    return subprocess.Popen(
        command,
        cwd=folder,
        env={**base, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def seconds(workload: str, env: dict[str, str], load: str, busy: int) -> float:
    args = [a if not a.endswith(".yaml") else str(ROOT / a) for a in WORKLOADS[workload]]
    others = []
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as beside:
        if load == "busy":
            others = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        elif load == "neighbour":
            others = [training(args, env, beside)]
        start = time.perf_counter()
        code = training(args, env, folder).wait()
        took = time.perf_counter() - start
        for other in others:
            other.kill()
            other.wait()
    if code != 0:
        raise SystemExit(f"{workload} with {env} failed (exit {code})")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--busy", type=int, default=int(CORES), help="busy processes")
    args = parser.parse_args()
    loads = {"quiet": "quiet", "busy": f"beside {args.busy} busy processes",
             "neighbour": "beside the same training"}  # fmt: skip
    print(f"| workload | setting | {' | '.join(loads.values())} |")
    print(f"| --- | --- | {' | '.join('---' for _ in loads)} |")
    for workload in args.only or sorted(WORKLOADS):
        for name, env in SETTINGS.items():
            cells = [f"{seconds(workload, env, load, args.busy):.1f} s" for load in loads]
            print(f"| {workload} | {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
