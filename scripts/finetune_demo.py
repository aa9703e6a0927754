"""The offline fine-tuning demo, `make finetune` (or `python scripts/finetune_demo.py [FLAGS]`).

1. `configs/image/finetune_stage1.yaml`: a ResNet-18 learns MNIST-1D digits 0-4, drawn as line
   plots, from scratch.
2. Its network is saved as a plain state_dict, the format of torchvision's own weight files.
3. `configs/image/finetune_stage2.yaml`: that backbone, frozen, under a new head for digits 5-9;
   then the same run with `weights: null`, a frozen random backbone: the control that shows
   whether the transfer is real.

The three test accuracies and the margin go to the terminal and to
`logs/finetune_demo/metrics.json`. FLAGS (e.g. `--trainer.max_epochs 2`) apply to every run.
"""

import json
import sys
import time
from pathlib import Path

import torch

from project.cli import main
from project.runs import METRICS, best_checkpoints, newest_run
from project.weights import read_weights_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "image"
OUT = Path("logs") / "finetune_demo"
WEIGHTS = OUT / "stage1_resnet18.pt"  # where finetune_stage2.yaml's `weights:` points


def fit(config: str, experiment: str, flags: list[str]) -> tuple[float, float, Path]:
    """Fits and tests `config`; returns its test accuracy, its wall time and its run folder."""
    start = time.perf_counter()
    main(
        ["fit", "-c", str(CONFIGS / config), "--experiment", experiment, "--test_after_fit", "true"]
        + flags
    )
    seconds = time.perf_counter() - start
    run = newest_run(Path("logs") / experiment)
    return json.loads((run / METRICS).read_text())["test/acc"], seconds, run


def save_network(checkpoint: Path, path: Path) -> None:
    """The checkpoint's network alone, keys without `net.`: what torchvision's files hold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(read_weights_file(checkpoint), path)


def run_demo(flags: list[str]) -> dict[str, float]:
    stage1_acc, stage1_s, stage1 = fit("finetune_stage1.yaml", "finetune_stage1", flags)
    (best,) = best_checkpoints(stage1)  # the checkpoint that was tested
    save_network(best, WEIGHTS)
    stage2_acc, stage2_s, stage2 = fit("finetune_stage2.yaml", "finetune_stage2", flags)
    random_flags = ["--model.init_args.weights", "null", *flags]
    random_acc, random_s, random = fit(
        "finetune_stage2.yaml", "finetune_stage2_random", random_flags
    )

    results = {
        "stage1/test/acc": stage1_acc,
        "stage2/test/acc": stage2_acc,
        "stage2_random_backbone/test/acc": random_acc,
        "transfer_margin": stage2_acc - random_acc,
        "stage1/seconds": round(stage1_s, 1),
        "stage2/seconds": round(stage2_s, 1),
        "stage2_random_backbone/seconds": round(random_s, 1),
    }
    (OUT / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("stage 1", "digits 0-4, trained from scratch", stage1_acc, stage1_s, stage1),
        ("stage 2", "digits 5-9, frozen stage-1 backbone", stage2_acc, stage2_s, stage2),
        ("control", "digits 5-9, frozen random backbone", random_acc, random_s, random),
    ]
    print("\nFine-tuning demo: ResNet-18 on MNIST-1D line plots (32×32), test accuracy")
    for name, what, acc, seconds, run in rows:
        print(f"  {name}  {what:<37} {acc:6.1%}  {seconds:5.0f} s  {run}")
    print(
        f"  transfer margin over a random backbone: {100 * (stage2_acc - random_acc):+.1f} points"
    )
    print(f"  written to {OUT / 'metrics.json'}; stage 1's weights: {WEIGHTS}")
    return results


if __name__ == "__main__":
    run_demo(sys.argv[1:])
