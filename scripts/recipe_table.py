"""The README's recipe table: each arm's test accuracy, mean ± sd over seeds, side by side.

    python scripts/recipe_table.py [--seeds 1 2 3]     (about 15 minutes on 2 CPU cores)

Arms: the default GRU on MNIST-1D with and without EMA + warmup, and the offline fine-tuning
demo (`make finetune`, its stage 2 accuracy) with and without the image recipe (augmentation,
label smoothing, MixUp/CutMix, no decay on norms, warmup, EMA). Every run is an ordinary run
under logs/recipe_table/; the table goes to logs/recipe_table/results.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
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


def gru(seed: int, flags: list[str], name: str) -> float:
    experiment = f"recipe_table/{name}/seed{seed}"
    config = ROOT / "configs" / "sequence" / "gru.yaml"
    command = [sys.executable, "-m", "project", "fit", "-c", str(config),
               *flags, "--seed_everything", str(seed), "--experiment", experiment,
               "--test_after_fit", "true", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    run = newest_run(Path("logs", experiment))
    return json.loads((run / METRICS).read_text())["test/acc"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    seeds = parser.parse_args().seeds
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
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
