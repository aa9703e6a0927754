"""The README's tables of measured test accuracy over seeds, each from one run of this script.

    python scripts/recipe_table.py [--seeds 1 2 3]     (the recipe table, ~15 minutes, 2 CPU cores)
    python scripts/recipe_table.py --table results --seeds 1 2 3 4 5 [--jobs 2]

`--table results` is "Results on MNIST-1D": every shipped sequence experiment
(configs/sequence/{gru,lstm,rnn}.yaml) with mean ± sd and the minimum over the seeds, its epochs
and fit time, then the paper's rows; `--jobs 2` runs two fits at a time (one torch thread each).

Recipe arms: the default GRU on MNIST-1D with and without EMA + warmup, and the offline fine-tuning
demo (`make finetune`, its stage 2 accuracy) with and without the image recipe (augmentation,
label smoothing, MixUp/CutMix, no decay on norms, warmup, EMA). Every run is an ordinary run
under logs/recipe_table/; the table goes to logs/recipe_table/<table>.md.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from project.runs import METRICS, newest_run

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("logs") / "recipe_table"
RECIPE = ROOT / "configs" / "recipe"
EMA = ROOT / "configs" / "trainer" / "ema.yaml"
GRU_RECIPE = ["-c", str(RECIPE / "warmup_cosine.yaml"), "-c", str(EMA)]
# the demo's stage runs are 6 epochs of ~27 steps: an average over ~50 steps, not the
# overlay's ~100
IMAGE_RECIPE = [
    *("-c", str(RECIPE / "image_augment.yaml"), *GRU_RECIPE),
    *("--trainer.callbacks.init_args.decay", "0.98"),
]


def fit(config: str, seed: int, flags: list[str], name: str) -> tuple[float, float, int]:
    """`make train EXP=<config>` with a seed: test accuracy, fit seconds and epochs."""
    experiment = f"recipe_table/{name}/seed{seed}"
    path = ROOT / "configs" / "sequence" / f"{config}.yaml"
    command = [sys.executable, "-m", "project", "fit", "-c", str(path),
               *flags, "--seed_everything", str(seed), "--experiment", experiment,
               "--test_after_fit", "true", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    # the run summary's first line: "fit took 17.2 s (20 epochs, 700 steps)"
    took = re.search(r"fit took ([\d.]+) s \((\d+) epochs", done.stdout + done.stderr)
    run = newest_run(Path("logs", experiment))
    accuracy = json.loads((run / METRICS).read_text())["test/acc"]
    return accuracy, float(took[1]), int(took[2])


def gru(seed: int, flags: list[str], name: str) -> float:
    return fit("gru", seed, flags, name)[0]


def finetune(seed: int, flags: list[str], name: str) -> float:
    folder = OUT / name / f"seed{seed}"  # the demo writes logs/ where it runs
    folder.mkdir(parents=True, exist_ok=True)
    demo = ROOT / "scripts" / "finetune_demo.py"
    command = [sys.executable, demo, "--seed_everything", str(seed),
               *flags, "--trainer.enable_progress_bar", "false"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, capture_output=True, cwd=folder, env=env)
    metrics = json.loads((folder / "logs" / "finetune_demo" / METRICS).read_text())
    return metrics["stage2/test/acc"]


ARMS = [
    ("GRU, MNIST-1D (configs/sequence/gru.yaml)", gru, [], "gru_plain"),
    ("GRU + warmup + EMA", gru, GRU_RECIPE, "gru_recipe"),
    ("fine-tuning demo, stage 2 (make finetune)", finetune, [], "finetune_plain"),
    ("fine-tuning demo + image recipe", finetune, IMAGE_RECIPE, "finetune_recipe"),
]


# the shipped sequence experiments: configs/sequence/<name>.yaml
RESULTS = [
    ("GRU, hidden 128", "gru"),
    ("LSTM, hidden 128, forget bias 1", "lstm"),
    ("plain RNN, hidden 128", "rnn"),
]
PAPER = [("GRU (Greydanus & Kobak 2020)", "91%"), ("CNN (paper)", "94%"), ("MLP (paper)", "68%"),
         ("logistic regression (paper)", "32%"), ("human (paper)", "96%")]  # fmt: skip


def results_table(seeds: list[int], jobs: int) -> list[str]:
    rows = ["| model | test accuracy, mean ± sd | min | epochs | fit time | command |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    with ThreadPoolExecutor(jobs) as pool:  # each fit is its own process: threads suffice
        for label, config in RESULTS:
            runs = list(pool.map(lambda seed, c=config: fit(c, seed, [], c), seeds))
            accuracies = [accuracy for accuracy, _, _ in runs]
            seconds = statistics.mean(s for _, s, _ in runs)
            mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
            rows.append(
                f"| {label} | **{mean:.1%} ± {sd:.1%}** | {min(accuracies):.1%} | {runs[0][2]} "
                f'| {seconds:.0f} s | `make train EXP={config} ARGS="--seed_everything N"` |'
            )
            print(rows[-1], "  seeds:", " ".join(f"{a:.1%}" for a in accuracies), flush=True)
    return rows + [f"| {label} | {accuracy} | | | | paper |" for label, accuracy in PAPER]


def recipe_table(seeds: list[int]) -> list[str]:
    rows = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | minutes |",
            "| --- |" + " --- |" * (len(seeds) + 2)]  # fmt: skip
    for label, run, flags, name in ARMS:
        start = time.perf_counter()
        accuracies = [run(seed, flags, name) for seed in seeds]
        minutes = (time.perf_counter() - start) / 60
        mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
        cells = " | ".join(f"{a:.1%}" for a in accuracies)
        rows.append(f"| {label} | {cells} | {mean:.1%} ± {sd:.1%} | {minutes:.1f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=["recipe", "results"], default="recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=1, help="fits at a time (results table)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.table == "results":
        rows = results_table(args.seeds, args.jobs)
    else:
        rows = recipe_table(args.seeds)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.table}.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"{(time.perf_counter() - start) / 60:.1f} minutes in all")


if __name__ == "__main__":
    main()
