"""Where a training step's time goes, on each path of the benchmark: `make profile`.

Each path of a workload (scripts/bench/benchmark.py: the template as `fit` runs it, Lightning's bare
loop, the hand-written loop) trains `--steps` steps under py-spy, a sampling profiler, twice: once
for a flame graph (SVG), once for the raw stacks. Each sample of a step is given to the innermost
frame that names what it is doing (the model's forward, backward, the optimizer, `self.log`,
Lightning's loop, ...), and the table says how many milliseconds per step each costs on each path.

    python scripts/bench/profile_steps.py                       # (c) per-step overhead, 3000 steps
    python scripts/bench/profile_steps.py --workload gru_mnist1d --steps 600 --out docs/profiles

py-spy (`pip install py-spy`, in the dev extra) samples Python stacks; a torch kernel shows as
the Python line that called it. Sampling at `--rate` Hz gives each path about rate × seconds
samples: the table's last column says how many, so what it resolves.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "scripts" / "bench" / "benchmark.py"
PATHS = ("template", "lightning", "hand")

# A sample's stack, read from the leaf up, is given to the first frame that matches one of
# these (a function name, a file path fragment); the order among them decides nothing else.
PARTS: list[tuple[str, str | None, str]] = [
    ("data loading", "__next__", "torch/utils/data/"),
    ("data loading", None, "project/data/"),  # the resumable loader's count of batches
    ("Lightning's data fetcher", None, "lightning/pytorch/loops/fetchers.py"),
    ("model forward", "forward", "project/models/"),
    ("loss", "loss_fn", "project/models/"),
    ("backward", "backward", "torch/"),
    ("zero_grad", "zero_grad", "torch/"),
    ("torchmetrics updates", None, "torchmetrics/"),
    ("self.log", "log", "lightning/pytorch/core/module.py"),
    ("optimizer step (torch)", None, "torch/optim/"),
    ("Lightning's closure and optimizer wrapper", None, "lightning/pytorch/loops/optimization/"),
    ("Lightning's callbacks", None, "lightning/pytorch/callbacks/"),
    ("the template's callbacks", None, "project/"),  # below the model's files: see `part_of`
    ("the benchmark: its step clock, the hand loop's own lines", None, "bench_paths.py"),
    ("Lightning's loop, hooks and strategy", None, "lightning/"),
]
STEP_FRAMES = {  # a sample is part of a training step when one of its frames is this
    "template": ("advance", "lightning/pytorch/loops/training_epoch_loop.py"),
    "lightning": ("advance", "lightning/pytorch/loops/training_epoch_loop.py"),
    "hand": ("train_by_hand", "bench_paths.py"),
}


def py_spy() -> str:
    """py-spy beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        sys.exit("profile_steps: py-spy not found: pip install py-spy (or pip install -e '.[dev]')")
    return found


def frames(stack: str) -> list[tuple[str, str]]:
    """py-spy's raw line's stack, root first, as (function, file) pairs."""
    pairs = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        # py-spy names methods `Class.method` and files by their path below sys.path
        pairs.append((name.strip().rsplit(".", 1)[-1], where.rsplit(":", 1)[0]))
    return pairs


# Work done on behalf of one of these is theirs wherever its leaf is (self.log's bookkeeping runs
# in Lightning's result collection, a metric's update in torch): looked for first, root to leaf.
CALLERS: list[tuple[str, str | None, str]] = [
    ("self.log", "log", "lightning/pytorch/core/module.py"),
    ("self.log", "log_dict", "lightning/pytorch/core/module.py"),
    ("torchmetrics updates", None, "torchmetrics/"),
    ("Lightning's logger connector (writes the logged values)", None, "logger_connector/"),
]


def part_of(stack: list[tuple[str, str]]) -> str:
    for part, function, fragment in CALLERS:
        if any(fragment in where and function in (None, name) for name, where in stack):
            return part
    for name, where in reversed(stack):
        if "project/models/" in where and name not in ("forward", "loss_fn"):
            return "the template's step (shared_step and hooks)"
        for part, function, fragment in PARTS:
            if fragment in where and (function is None or name == function):
                return part
    return "other (Python, torch dispatch)"


def profile(workload: str, path: str, steps: int, rate: int, out: Path) -> Counter:
    """Runs one path under py-spy (flame graph, then raw stacks); samples per part, per step."""
    measure = [sys.executable, str(BENCHMARK), "--measure", workload, path, "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "stacks.txt"
        for form, target in (("flamegraph", out / f"{workload}-{path}.svg"), ("raw", raw)):
            command = [py_spy(), "record", "--rate", str(rate), "--format", form]
            command += ["--output", str(target), "--", *measure]
            subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
        counts: Counter = Counter()
        step_frame = STEP_FRAMES[path]
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            pairs = frames(stack)
            if any(name == step_frame[0] and step_frame[1] in where for name, where in pairs):
                counts[part_of(pairs)] += int(count)
    return counts


def table(counts: dict[str, Counter], steps: int, rate: int) -> str:
    """Milliseconds per step of each part on each path, costliest on the template first."""
    to_ms = 1000 / rate / steps
    parts = sorted(
        {p for c in counts.values() for p in c}, key=lambda p: -counts["template"].get(p, 0)
    )
    lines = [
        "| part of a step | " + " | ".join(f"{p} ms/step" for p in counts) + " |",
        "| --- |" + " --- |" * len(counts),
    ]
    for part in parts:
        cells = " | ".join(f"{c.get(part, 0) * to_ms:.3f}" for c in counts.values())
        lines.append(f"| {part} | {cells} |")
    totals = " | ".join(f"**{sum(c.values()) * to_ms:.3f}**" for c in counts.values())
    samples = " | ".join(str(sum(c.values())) for c in counts.values())
    lines += [f"| **whole step** | {totals} |", f"| samples in steps | {samples} |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="tiny_overhead")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "profiles")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {path: profile(args.workload, path, args.steps, args.rate, args.out) for path in PATHS}
    text = table(counts, args.steps, args.rate)
    (args.out / f"{args.workload}.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
