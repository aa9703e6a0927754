"""The template's training path against a hand-written PyTorch loop: `make bench`.

For each workload both paths get the same model (same initial weights), the same batches in the
same order and the same optimizer, built by the CLI from the same config:
- template: `trainer.fit(...)` exactly as `python -m project fit` runs it (logging, metrics,
  checkpoints and all), with validation off so that only training steps are compared;
- hand-written: the seed's loop, `zero_grad` / `loss.backward()` / `step` over the same loader.
Each measurement runs in a fresh process (peak memory is per process), the two paths alternate,
and the ratio reported is the median over the repeats of template / hand-written samples per
second, timed over the steps after a warm-up. Results go to logs/bench/ as JSON and markdown.

    python scripts/bench/benchmark.py                 # all workloads, CPU-sized
    python scripts/bench/benchmark.py --repeats 5 --only gru_mnist1d
    python scripts/bench/benchmark.py --gpu           # on the GPU: bigger batches, ResNet-50 too

With --gpu the template runs with configs/trainer/gpu.yaml and bf16.yaml stacked (bf16-mixed,
channels-last, TF32, cuDNN benchmark mode) and the hand-written loop sets the same by hand
(`torch.autocast`, `model.to(memory_format=...)`, ...): each path as fast as its author would
make it. Throughput is the median over steps of batch size / step time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_accuracy import time_to_accuracy
from bench_paths import measure_hand_written, measure_template
from bench_report import machine, markdown, ratios, summary

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# name: (config and overrides, steps timed after the warm-up, warm-up steps, what it measures)
WORKLOADS: dict[str, tuple[list[str], int, int, str]] = {
    "gru_mnist1d": (
        ["-c", str(CONFIGS / "sequence" / "gru.yaml")],
        30,
        5,
        "(a) the default experiment: GRU-128 on MNIST-1D, batch 100",
    ),
    "resnet18_32px": (
        [
            "-c",
            str(CONFIGS / "image" / "small_cnn.yaml"),
            "--model.init_args.backbone",
            "resnet18",
            "--model.init_args.weights",
            "null",
            "--model.init_args.image_size",
            "32",
            "--data.init_args.batch_size",
            "32",
            # the augmentation is drawn per image in a DataModule hook that a hand-written loop
            # would not have: off, so that both paths see the same batches
            "--data.init_args.augment",
            "false",
        ],
        12,
        3,
        "(b) ResNet-18 on 32x32 images (digits upscaled), batch 32",
    ),
    "tiny_overhead": (
        [
            "-c",
            str(CONFIGS / "sequence" / "gru.yaml"),
            "--model.init_args.hidden_size",
            "8",
            "--data.init_args.batch_size",
            "8",
        ],
        300,
        20,
        "(c) per-step overhead: GRU-8 on MNIST-1D, batch 8",
    ),
}
TARGET_ACCURACY = 0.97  # MNIST-1D test accuracy that `make train` must reach
# the template as `fit` runs it, the seed's hand-written loop, Lightning's loop alone
PATHS = ("template", "hand", "lightning")
GPU_OVERLAYS = [
    "-c",
    str(CONFIGS / "trainer" / "gpu.yaml"),
    "-c",
    str(CONFIGS / "trainer" / "bf16.yaml"),
]
GPU_BIG = {"resnet18_32px": ["--data.init_args.batch_size", "256"]}
GPU_ONLY: dict[str, tuple[list[str], int, int, str]] = {
    "resnet50_224px": (
        ["-c", str(CONFIGS / "image" / "resnet50_throughput.yaml")],
        30,
        10,  # cuDNN's benchmark mode tries its algorithms in the first steps
        "(d) ResNet-50 fine-tuning, 224x224 images resident on the GPU, batch 256",
    ),
}


def one_measurement(workload: str, path: str, gpu: bool, quick: bool = False) -> dict:
    """Runs one path of one workload in a fresh process and returns what it printed."""
    command = [sys.executable, __file__, "--measure", workload, path]
    command += ["--gpu"] * gpu + ["--quick"] * quick
    with tempfile.TemporaryDirectory() as folder:  # the template's run folder goes here
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{workload}/{path} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_all(names: list[str], repeats: int, gpu: bool, out: Path, quick: bool = False) -> dict:
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "workloads": {}}
    workloads = {**WORKLOADS, **GPU_ONLY} if gpu else WORKLOADS
    for name in (n for n in names if n in workloads):
        runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        for repeat in range(repeats):
            # rotate which path goes first, so drift in machine load hits all alike
            for path in PATHS[repeat % 3 :] + PATHS[: repeat % 3]:
                runs[path].append(one_measurement(name, path, gpu, quick))
        template_losses, hand_losses = runs["template"][0]["losses"], runs["hand"][0]["losses"]
        agree = len(template_losses) == len(hand_losses) and all(
            round(a, 5) == round(b, 5) for a, b in zip(template_losses, hand_losses, strict=True)
        )
        results["workloads"][name] = {
            "what": workloads[name][3],
            "template_samples_per_s": statistics.median(
                r["samples_per_s"] for r in runs["template"]
            ),
            "hand_samples_per_s": statistics.median(r["samples_per_s"] for r in runs["hand"]),
            "lightning_samples_per_s": statistics.median(
                r["samples_per_s"] for r in runs["lightning"]
            ),
            "ratio": summary(ratios(runs["template"], runs["hand"])),
            "lightning_ratio": summary(ratios(runs["lightning"], runs["hand"])),
            "cpu_ratio": summary(ratios(runs["template"], runs["hand"], "cpu_samples_per_s")),
            "lightning_cpu_ratio": summary(
                ratios(runs["lightning"], runs["hand"], "cpu_samples_per_s")
            ),
            # the yardstick for the template's own cost: against Lightning, same round
            "over_lightning": summary(ratios(runs["template"], runs["lightning"])),
            "over_lightning_cpu": summary(
                ratios(runs["template"], runs["lightning"], "cpu_samples_per_s")
            ),
            "losses_agree_5_decimals": agree,
            "max_loss_difference": max(
                (abs(a - b) for a, b in zip(template_losses, hand_losses, strict=False)),
                default=0.0,
            ),
            "template_peak_mb": max(r["peak_mb"] for r in runs["template"]),
            "hand_peak_mb": max(r["peak_mb"] for r in runs["hand"]),
        }
        print(name, json.dumps(results["workloads"][name]), flush=True)
    if "time_to_accuracy" in names and not gpu:  # a CPU figure: `make train` on a laptop
        runs = {
            path: one_measurement("time_to_accuracy", path, gpu, quick)
            for path in ("template", "hand")
        }
        results["time_to_accuracy"] = {"target": TARGET_ACCURACY, **runs}
        print("time_to_accuracy", json.dumps(runs), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    everything = [*WORKLOADS, *GPU_ONLY, "time_to_accuracy"]
    parser.add_argument("--only", nargs="+", choices=everything, default=everything)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="run on the GPU with bigger batches")
    parser.add_argument("--quick", action="store_true", help="20 timed steps: checks, not figures")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench")
    parser.add_argument("--measure", nargs=2, metavar=("WORKLOAD", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)  # profile_steps.py: longer
    args = parser.parse_args()
    if args.measure:
        from project.launch_checks import default_threads

        default_threads()  # every path with the threads `python -m project` gives a run
    if args.measure and args.measure[0] == "time_to_accuracy":
        print(json.dumps(time_to_accuracy(args.measure[1], TARGET_ACCURACY, args.quick)))
        return
    if args.measure:
        name, path = args.measure
        config, steps, warmup, _ = {**WORKLOADS, **GPU_ONLY}[name]
        if args.quick:
            steps, warmup = 20, 2
        steps = args.steps or steps
        if args.gpu:
            config = [*config, *GPU_OVERLAYS, *GPU_BIG.get(name, [])]
        if path == "hand":
            print(json.dumps(measure_hand_written(config, steps, warmup, args.gpu)))
        else:
            bare = path == "lightning"
            print(json.dumps(measure_template(config, steps, warmup, bare, args.gpu)))
        return
    run_all(args.only, args.repeats, args.gpu, args.out, args.quick)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
