"""Data larger than memory, measured: one epoch over a synthetic sequence data set of N GB, read
from a folder of `.npy` files (project/data/sequence_arrays.py), with the peak memory of the
whole process tree (the training processes and their DataLoader workers), on 1 process and on
2 DDP CPU ranks; then the same model's throughput on a smaller set read from memory (`.npz`)
and from the folder, side by side.

    python scripts/big_sequences.py --folder /tmp/big --gigabytes 4     # ~5 min here (2 to write)
    python scripts/big_sequences.py --folder /tmp/big --gigabytes 0.01 --small 0.005  # a check

Each run goes through `/usr/bin/time -v` (its "Maximum resident set size" is the largest single
process), while this script samples /proc every 0.2 s and sums, over the tree, the resident set
(RSS: pages shared by forked workers count once per process), the proportional set (PSS: shared
pages split between the processes sharing them, other jobs' included) and the tree's memory with
each page counted once (`tree_memory`). `--runs` picks some of the runs. Results:
`<folder>/results.json`. Delete the folder afterwards: the data set is only for this measurement.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS, FEATURES, CLASSES = 16, 256, 10  # 16 KiB of float32 per sample
CHUNK = 8192  # samples generated and written at a time
VAL_SIZE = 0.02  # of the samples held out and validated once, after the epoch


def generate(folder: Path, gigabytes: float, seed: int = 0) -> int:
    """`x.npy` (samples, 16, 256) float32 of about `gigabytes` GB and `y.npy`, written a chunk
    at a time (never the whole set in memory); each class adds its own sine to the noise. A set
    already there with that many samples is kept."""
    count = int(gigabytes * 1e9 / (STEPS * FEATURES * 4))
    if (folder / "y.npy").is_file() and len(np.load(folder / "y.npy")) == count:
        return count
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, count)
    x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float32, (count, STEPS, FEATURES))
    time_steps = np.arange(STEPS, dtype=np.float32)[:, None]
    patterns = np.stack([np.sin(0.1 * (c + 1) * time_steps) for c in range(CLASSES)])
    for start in range(0, count, CHUNK):
        labels = y[start : start + CHUNK]
        noise = rng.standard_normal((len(labels), STEPS, FEATURES), dtype=np.float32)
        x[start : start + CHUNK] = noise + patterns[labels]
        x.flush()  # written pages leave this process's memory once on disk
    del x
    np.save(folder / "y.npy", y)
    return count


def as_npz(folder: Path) -> Path:
    path = folder.with_suffix(".npz")
    np.savez(path, x=np.load(folder / "x.npy"), y=np.load(folder / "y.npy"))
    return path


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo += [int(child) for child in children]
        except OSError:  # the process ended meanwhile
            pass
    return found


def memory_kib(pid: int) -> tuple[int, int, int, dict[str, int]]:
    """One process's RSS, PSS, and anonymous and shared-memory PSS in KiB, and the resident
    KiB of each file it maps less the copied (anonymous) pages of those maps; zeros if it
    ended."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        maps = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return 0, 0, 0, {}
    values = dict(re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.MULTILINE))
    own = int(values.get("Pss_Anon", 0)) + int(values.get("Pss_Shmem", 0))
    files: dict[str, int] = {}
    name = None
    for line in maps.splitlines():
        if line[:1] in "0123456789abcdef" and " " in line and "-" in line.split(" ", 1)[0]:
            fields = line.split()
            name = fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
            if name and name.startswith("/dev/shm"):
                name = None  # batches in flight: counted in Pss_Shmem
        elif name and line.startswith(("Rss:", "Anonymous:")):
            sign = 1 if line.startswith("Rss:") else -1
            files[name] = files.get(name, 0) + sign * int(line.split()[1])
    return int(values.get("Rss", 0)), int(values.get("Pss", 0)), own, files


def tree_memory(sizes: list[tuple[int, int, int, dict[str, int]]]) -> int:
    """The tree's memory in KiB with each page counted once, whatever else runs on the machine:
    anonymous and shared memory split between the tree's processes (PSS: forked workers share
    their rank's pages), and each mapped file's pages once, at the most any process maps (the
    processes run the same libraries). The sum of PSS would split the libraries' pages with
    every other process that maps them, here other jobs' torch."""
    files: dict[str, int] = {}
    for *_, mapped in sizes:
        for name, kib in mapped.items():
            files[name] = max(files.get(name, 0), kib)
    return sum(own for _, _, own, _ in sizes) + sum(files.values())


def fit(train: Path, workers: int, ddp: str | None, logs: Path, batch_size: int) -> dict:
    """One epoch of a small GRU over `train` under `/usr/bin/time -v`, the tree sampled; `ddp`:
    the strategy of 2 CPU ranks (`ddp` starts rank 1 as a new process, `ddp_fork` forks both)."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "project", "fit"]
    command += ["--model", "SequenceClassifier", "--model.init_args.hidden_size", "16"]
    command += ["--data", "SequenceFileDataModule", "--data.init_args.train", str(train)]
    command += ["--data.init_args.batch_size", str(batch_size)]
    command += [
        "--data.init_args.num_workers",
        str(workers),
        "--data.init_args.val_size",
        str(VAL_SIZE),
    ]
    command += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    command += ["--trainer.logger.init_args.save_dir", str(logs)]
    command += ["--experiment", train.name + (f"-{ddp}" if ddp else "")]
    if ddp:
        command += ["-c", str(ROOT / "configs" / "trainer" / "ddp_cpu.yaml")]
        command += ["--trainer.strategy", ddp]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_rss = peak_pss = peak_tree = most = 0
    started = time.perf_counter()
    while process.poll() is None:
        sizes = [memory_kib(pid) for pid in tree(process.pid)[1:]]  # not `time` itself
        peak_rss = max(peak_rss, sum(size[0] for size in sizes))
        peak_pss = max(peak_pss, sum(size[1] for size in sizes))
        peak_tree = max(peak_tree, tree_memory(sizes))
        most = max(most, len(sizes))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    output = process.stdout.read().decode(errors="replace")
    if process.returncode != 0:
        sys.exit(f"fit on {train} failed:\n{output[-4000:]}")
    fit_seconds = float(re.search(r"fit took ([\d.]+) s", output).group(1))
    return {
        "train": str(train),
        "ddp_ranks": 2 if ddp else 1,
        "strategy": ddp,
        "workers_per_rank": workers,
        "processes_at_most": most,
        "fit_seconds": fit_seconds,
        "wall_seconds": round(wall, 1),
        "largest_process_max_rss_mb": int(
            re.search(r"Maximum resident set size \(kbytes\): (\d+)", output).group(1)
        )
        // 1024,
        "tree_peak_rss_mb": peak_rss // 1024,
        "tree_peak_pss_mb": peak_pss // 1024,
        "tree_peak_mb": peak_tree // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, required=True, help="where the data sets go")
    parser.add_argument("--gigabytes", type=float, default=4.0, help="the large set's x.npy")
    parser.add_argument("--small", type=float, default=0.2, help="GB of the in-memory set")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--runs", nargs="+", help="only these runs (names in results.json)")
    args = parser.parse_args()
    large, small = args.folder / "large", args.folder / "small"
    results = {"machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")}
    started = time.perf_counter()
    results["large_samples"] = generate(large, args.gigabytes)
    results["large_gb"] = round((large / "x.npy").stat().st_size / 1e9, 2)
    results["generate_seconds"] = round(time.perf_counter() - started, 1)
    results["small_samples"] = generate(small, args.small, seed=1)
    npz = as_npz(small)
    logs = args.folder / "logs"
    # the small set's runs with workers are the memory baseline of the large set's: what the
    # processes hold whatever the data's size
    runs = {
        "large_1_process": (large, args.workers, None),
        "large_2_ddp_ranks": (large, args.workers, "ddp"),
        "large_2_ddp_ranks_no_workers": (large, 0, "ddp"),
        "large_2_ddp_fork_ranks": (large, args.workers, "ddp_fork"),
        "small_from_folder_workers": (small, args.workers, None),
        "small_2_ddp_ranks": (small, args.workers, "ddp"),
        "small_in_memory": (npz, 0, None),
        "small_from_folder": (small, 0, None),
    }
    for name, (train, workers, ddp) in runs.items():
        if args.runs and name not in args.runs:
            continue
        results[name] = fit(train, workers, ddp, logs, args.batch_size)
        count = results["large_samples" if train == large else "small_samples"]
        trained = count - max(1, round(VAL_SIZE * count))  # the rest validates, once
        results[name]["samples_per_s"] = round(trained / results[name]["fit_seconds"])
        print(name, json.dumps(results[name]), flush=True)
    (args.folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
