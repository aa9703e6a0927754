"""The template's training path against a hand-written PyTorch loop: `make bench`.

For each workload both paths get the same model (same initial weights), the same batches in the
same order and the same optimizer, built by the CLI from the same config:
- template: `trainer.fit(...)` exactly as `python -m project fit` runs it (logging, metrics,
  checkpoints and all), with validation off so that only training steps are compared;
- hand-written: the seed's loop, `zero_grad` / `loss.backward()` / `step` over the same loader.
Each measurement runs in a fresh process (peak memory is per process), the two paths alternate,
and the ratio reported is the median over the repeats of template / hand-written samples per
second, timed over the steps after a warm-up. Results go to logs/bench/ as JSON and markdown.

    python scripts/benchmark.py                 # all workloads, CPU-sized
    python scripts/benchmark.py --repeats 5 --only gru_mnist1d
    python scripts/benchmark.py --gpu           # on the GPU: bigger batches, ResNet-50 too

With --gpu the template runs with configs/trainer/gpu.yaml and bf16.yaml stacked (bf16-mixed,
channels-last, TF32, cuDNN benchmark mode) and the hand-written loop sets the same by hand
(`torch.autocast`, `model.to(memory_format=...)`, ...): each path as fast as its author would
make it. Throughput is the median over steps of batch size / step time.
"""

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# name: (config and overrides, steps timed after the warm-up, warm-up steps, what it measures)
WORKLOADS: dict[str, tuple[list[str], int, int, str]] = {
    "gru_mnist1d": (
        ["-c", str(CONFIGS / "gru.yaml")],
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
            str(CONFIGS / "gru.yaml"),
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


def build(args: list[str], validate: bool = False):  # noqa: ANN201 (a ProjectCLI)
    from project.cli import make_cli

    if not validate:
        # a fixed learning rate on every path: the hand-written loop has no schedule to step,
        # and the per-step losses must agree (a schedule costs one call per step, the same here)
        args = [*args, "--trainer.limit_val_batches", "0", "--lr_scheduler", "null"]
    return make_cli([*args, "--trainer.enable_progress_bar", "false"], run=False)


def test_accuracy(model, data) -> float:  # noqa: ANN001
    """Accuracy of `model` on the test split, computed the same way for both paths."""
    import torch

    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, targets, *lengths in data.test_dataloader():
            predicted = model(inputs.to(model.device), *lengths).argmax(-1).cpu()
            correct += int((predicted == targets).sum())
            total += len(targets)
    model.train(was_training)
    return correct / total


def time_to_accuracy(path: str, target: float, quick: bool = False) -> dict:
    """Trains the default experiment for its full schedule; after each epoch the test accuracy
    is probed with the clock stopped. Returns the training seconds until it first reached
    `target`, and the accuracy at the end. `quick`: 2 epochs, a check and not a figure."""
    args = ["-c", str(CONFIGS / "gru.yaml")]
    epochs = ["--trainer.max_epochs", "2"] if quick else []
    history: list[tuple[float, float]] = []  # (training seconds so far, test accuracy)
    if path == "template":
        from lightning import Callback

        class Probe(Callback):
            def __init__(self) -> None:
                self.elapsed = 0.0
                self.started = 0.0

            def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
                self.started = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
                # the epoch's validation has run by now: it counts, as it would for a user
                self.elapsed += time.perf_counter() - self.started
                history.append((self.elapsed, test_accuracy(pl_module, trainer.datamodule)))

        cli = build([*args, *epochs, "--trainer.logger.init_args.save_dir", "."], validate=True)
        cli.trainer.callbacks.append(Probe())
        cli.datamodule.setup("test")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    else:
        cli = build([*args, *epochs], validate=True)  # the config's schedule, as the template
        model, data = cli.model, cli.datamodule
        data.setup("fit")
        data.setup("test")
        configured = model.configure_optimizers()
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        loader = data.train_dataloader()
        if hasattr(scheduler, "size_to_run"):  # WarmupCosineLR: what fit does at train start
            scheduler.size_to_run(cli.trainer.max_epochs * len(loader), len(loader))
        per_step = configured["lr_scheduler"].get("interval") == "step"
        elapsed = 0.0
        for epoch in range(cli.trainer.max_epochs):
            started = time.perf_counter()
            loader.sampler.set_epoch(epoch)
            model.train()
            for inputs, targets, *lengths in loader:
                optimizer.zero_grad()
                loss = model.loss_fn(model(inputs, *lengths), targets)
                loss.backward()
                optimizer.step()
                if per_step:
                    scheduler.step()
            if not per_step:
                scheduler.step()
            elapsed += time.perf_counter() - started
            history.append((elapsed, test_accuracy(model, data)))
    reached = next((seconds for seconds, accuracy in history if accuracy >= target), None)
    return {
        "seconds_to_target": reached,
        "final_accuracy": history[-1][1],
        "seconds": history[-1][0],
    }


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def read_clocks() -> tuple[float, float]:
    """Wall time and this process's CPU time (all its threads): the CPU time excludes the time
    other processes took the cores, so it still resolves the paths on a busy machine."""
    return time.perf_counter(), time.process_time()


def throughput(marks: list[tuple[float, float]], batch_size: int, device_type: str) -> dict:
    """Samples per second from the clocks at the start of consecutive steps (and the last one's
    end), by wall time and by the process's CPU time.

    On a CPU: the median step, so that a moment when another process takes the core does not
    count against one path only. On a GPU, where a step's start only says when its kernels were
    queued: the whole window, synchronised at both ends only, as training runs (no CPU figure).
    """
    if device_type == "cuda":
        wall = batch_size * (len(marks) - 1) / (marks[-1][0] - marks[0][0])
        return {"samples_per_s": wall, "cpu_samples_per_s": None}
    steps = list(itertools.pairwise(marks))
    return {
        "samples_per_s": batch_size / statistics.median(b[0] - a[0] for a, b in steps),
        "cpu_samples_per_s": batch_size / statistics.median(b[1] - a[1] for a, b in steps),
    }


def set_up_gpu_by_hand(model) -> None:  # noqa: ANN001
    """What configs/trainer/gpu.yaml sets, as a hand-written loop would (autocast: the caller)."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    model.to(memory_format=torch.channels_last)


def measure_template(args: list[str], steps: int, warmup: int, bare: bool, gpu: bool) -> dict:
    """`bare`: Lightning's loop and nothing of the template (no logger, callbacks, metrics or
    `self.log`; `training_step` is the hand-written loop's forward and loss): what Lightning
    itself costs, apart from what the template adds."""
    from lightning import Callback, Trainer

    class StepClock(Callback):
        """The time each timed step starts (and when the last one ends), and every loss."""

        def __init__(self) -> None:
            self.losses: list = []
            self.marks: list[tuple[float, float]] = []
            self.step = 0  # over epochs (batch_idx starts again at each)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if self.step == warmup:
                _synchronize(pl_module.device.type)
            if self.step >= warmup:
                self.marks.append(read_clocks())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            self.losses.append(outputs["loss"].detach())  # read after the run: no sync per step
            self.step += 1
            if self.step == warmup + steps:
                _synchronize(pl_module.device.type)
                self.marks.append(read_clocks())
                trainer.should_stop = True

    # as many epochs as the steps need: the clock stops the run
    cli = build([*args, "--trainer.max_epochs", "-1", "--trainer.logger.init_args.save_dir", "."])
    clock = StepClock()
    if bare:

        class Bare(type(cli.model)):
            def training_step(self, batch: tuple, batch_idx: int):  # noqa: ANN202
                inputs, targets, *lengths = batch
                return self.loss_fn(self(inputs, *lengths), targets)

            def on_train_epoch_end(self) -> None:
                pass

        cli.model.__class__ = Bare
        if gpu:
            set_up_gpu_by_hand(cli.model)
        trainer = Trainer(
            accelerator="gpu" if gpu else "cpu",
            devices=1,
            precision="bf16-mixed" if gpu else "32-true",
            max_epochs=-1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
        )
    else:
        trainer = cli.trainer
        trainer.callbacks.append(clock)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    device_type = "cuda" if gpu else "cpu"  # fit's teardown has moved the model back to the CPU
    return {
        **throughput(clock.marks, cli.datamodule.batch_size, device_type),
        "losses": [float(loss) for loss in clock.losses],
        "peak_mb": peak_memory_mb(device_type),
    }


def measure_hand_written(args: list[str], steps: int, warmup: int, gpu: bool) -> dict:
    """The seed's loop over the same model, batches and optimizer; on a GPU with the settings
    of configs/trainer/gpu.yaml and bf16.yaml written out by hand."""
    import contextlib

    import torch

    cli = build(args)
    model, data = cli.model, cli.datamodule
    device = torch.device("cuda" if gpu else "cpu")
    model.to(device).train()
    autocast = contextlib.nullcontext()
    if gpu:
        set_up_gpu_by_hand(model)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    data.setup("fit")
    if getattr(data, "on_device", False):  # synthetic images: kept on the GPU, as the template does
        data.move_to(device)
    loader = data.train_dataloader()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    marks, losses = train_by_hand(model, loader, optimizer, autocast, device, steps, warmup)
    return {
        **throughput(marks, data.batch_size, device.type),
        "losses": [float(loss) for loss in losses],
        "peak_mb": peak_memory_mb(device.type),
    }


def train_by_hand(model, loader, optimizer, autocast, device, steps: int, warmup: int) -> tuple:  # noqa: ANN001
    """The seed's loop, epoch after epoch until `warmup + steps` steps; the clocks at each timed
    step's start (and the last one's end), and every loss. Its own function, so that a profile
    finds its steps (scripts/profile_steps.py)."""
    losses: list = []
    marks: list[tuple[float, float]] = []
    for index, (inputs, targets, *lengths) in enumerate(epochs_of(loader)):
        if index == warmup:
            _synchronize(device.type)
        if index >= warmup:
            marks.append(read_clocks())
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        with autocast:
            loss = model.loss_fn(model(inputs, *lengths), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if index == warmup + steps - 1:
            _synchronize(device.type)
            marks.append(read_clocks())
            break
    return marks, losses


def epochs_of(loader) -> Iterator:  # noqa: ANN001
    """The loader's batches epoch after epoch, each epoch's order set as Lightning sets it."""
    for epoch in itertools.count():
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


def _synchronize(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


def one_measurement(workload: str, path: str, gpu: bool, quick: bool = False) -> dict:
    """Runs one path of one workload in a fresh process and returns what it printed."""
    command = [sys.executable, __file__, "--measure", workload, path]
    command += ["--gpu"] * gpu + ["--quick"] * quick
    with tempfile.TemporaryDirectory() as folder:  # the template's run folder goes here
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{workload}/{path} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} threads"


def ratios(runs: list[dict], hand: list[dict], key: str = "samples_per_s") -> list[float]:
    """Each run's samples/s over the hand loop's of its round (by wall or by CPU time)."""
    return [r[key] / h[key] for r, h in zip(runs, hand, strict=True) if r[key] and h[key]]


def summary(values: list[float]) -> dict:
    """Median and range over the rounds: the range is what this machine resolves today."""
    if not values:
        return {"median": None, "low": None, "high": None}
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


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


def markdown(results: dict) -> str:
    lines = [
        f"Measured {results['date']} on {results['machine']}.",
        "",
        "| workload | template samples/s | hand-written samples/s | template / hand (wall) "
        "| template / hand (CPU time) | Lightning alone / hand (wall; CPU time) "
        "| losses agree (5 dp) | peak MB template / hand |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["workloads"].values():
        lines.append(
            f"| {r['what']} | {r['template_samples_per_s']:.0f} | {r['hand_samples_per_s']:.0f} "
            f"| {spread(r['ratio'])} | {spread(r['cpu_ratio'])} "
            f"| {spread(r['lightning_ratio'])}; {spread(r['lightning_cpu_ratio'])} "
            f"| {'yes' if r['losses_agree_5_decimals'] else 'no'} "
            f"| {r['template_peak_mb']:.0f} / {r['hand_peak_mb']:.0f} |"
        )
    lines += [
        "",
        "Ratios: the median over the rounds of each run's samples/s over the hand-written "
        "loop's in the same round, with the lowest and highest round in brackets. Wall: the "
        "median step's wall time; CPU time: the median step's CPU time of the process (all its "
        "threads), which leaves out what other processes took. Lightning alone: a bare "
        "`Trainer` (no logger, callbacks, metrics or `self.log`) around the same forward and "
        "loss.",
    ]
    tta = results.get("time_to_accuracy")
    if tta:
        lines += [
            "",
            f"Time to {tta['target']:.0%} MNIST-1D test accuracy (default experiment, "
            "training seconds; the template's include its validation passes):",
            "",
            "| path | seconds to target | final accuracy | seconds for all epochs |",
            "| --- | --- | --- | --- |",
        ]
        for path in ("template", "hand"):
            r = tta[path]
            to_target = (
                "not reached" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.1f}"
            )
            lines.append(
                f"| {path} | {to_target} | {r['final_accuracy']:.3f} | {r['seconds']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def spread(ratio: dict) -> str:
    if ratio["median"] is None:
        return "n/a"
    return f"{ratio['median']:.3f} [{ratio['low']:.3f}–{ratio['high']:.3f}]"


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
