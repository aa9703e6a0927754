"""What only a GPU can show, in one process and under 8 minutes on one H100: run by
scripts/gpu_check.sh (`make gpu-check`), which first installs what the machine lacks.

Steps, each a `python -m project fit` run in this process (one import of torch for all):
- every GPU overlay fits a few steps: gpu.yaml (TF32, cuDNN benchmark, channels-last), with
  bf16.yaml, with fp16.yaml, with compile.yaml, on a ResNet-18 over images kept on the GPU, and
  the GRU with gpu.yaml and bf16.yaml;
- an exact mid-epoch resume on the GPU: Ctrl-C at step 10, `--ckpt_path last`, the weights
  against those of a run never stopped;
- ddp.yaml on one device;
- scripts/bench/benchmark.py --gpu: ResNet-50 at 224 px in bf16, the template against a hand-written
  loop, images/s (its own processes).

`--dry-run` runs the same steps on the CPU at toy sizes (compile with Dynamo's eager backend),
the everyday tests' check of this script. Each step is recorded (ok, seconds, what it showed or
its error) in one file, `<out>/results.json`; a failed step does not stop the others.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS, TRAINER = ROOT / "configs", ROOT / "configs" / "trainer"
BENCH = ROOT / "scripts" / "bench"  # benchmark.py and its bench_*.py
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class CtrlCAtStep(Callback):
    """Sends this process SIGINT after optimizer step `step`, as a user's Ctrl-C: the run saves
    `last.ckpt` mid-epoch and stops."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object, _: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class FinalWeights(Callback):
    """Saves the weights when fit ends to `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.path)


def callback(name: str, **init_args: object) -> list[str]:
    spec = {"class_path": f"gpu_check.{name}", "init_args": init_args}
    return ["--trainer.callbacks+", json.dumps(spec, default=str)]


def fit(*args: object) -> None:
    """`python -m project fit ARGS` in this process; a failure raises."""
    from project.cli import main

    try:
        main(["fit", *map(str, args), *QUIET])
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def overlays(dry: bool, out: Path) -> dict[str, list]:
    """Each overlay's run: a few steps of ResNet-18 on images kept on the device, and the GRU."""
    gpu = ["-c", TRAINER / "gpu.yaml"]  # TF32 and channels-last apply on a CPU too
    on = ["--trainer.accelerator", "cpu"] if dry else []  # after the overlays: wins
    if dry:  # the overlay's callback with Dynamo's eager backend: traced, not code-generated
        compile_yaml = out / "compile_eager.yaml"
        compile_yaml.write_text(
            "trainer:\n  callbacks+:\n    - class_path: project.callbacks.CompileNetwork\n"
            "      init_args: {backend: eager}\n"
        )
    else:
        compile_yaml = TRAINER / "compile.yaml"
    size, batch, steps = (32, 8, 2) if dry else (64, 64, 5)
    images = ["-c", CONFIGS / "image" / "resnet50_throughput.yaml",
        "--model.init_args.backbone", "resnet18", "--model.init_args.image_size", size,
        "--data.init_args.image_size", size, "--data.init_args.num_samples", 4 * batch,
        "--data.init_args.num_classes", 10, "--data.init_args.batch_size", batch,
        "--trainer.max_steps", steps]  # fmt: skip
    gru = ["-c", CONFIGS / "sequence" / "gru.yaml", "--trainer.max_steps", steps,
        "--trainer.limit_val_batches", 2]  # fmt: skip
    if dry:
        gru += ["--model.init_args.hidden_size", 8]
    bf16, fp16 = ["-c", TRAINER / "bf16.yaml"], ["-c", TRAINER / "fp16.yaml"]
    return {
        "gpu (fp32, TF32, channels-last)": [*images, *gpu, *on],
        "gpu + bf16": [*images, *gpu, *bf16, *on],
        "gpu + fp16": [*images, *gpu, *fp16, *on],
        "gpu + compile + bf16": [*images, *gpu, "-c", compile_yaml, *bf16, *on],
        "gru: gpu + bf16": [*gru, *gpu, *bf16, *on],
    }


def exact_resume(dry: bool, out: Path) -> str:
    """Ctrl-C at step 10 (epoch 1 of 7-step epochs) and a resume, against a run never stopped."""
    common = ["-c", CONFIGS / "sequence" / "gru.yaml", "--data.init_args.batch_size", 500,
        "--trainer.max_epochs", 2, "--trainer.limit_val_batches", 2]  # fmt: skip
    common += ["-c", TRAINER / "gpu.yaml", *(["--trainer.accelerator", "cpu"] if dry else [])]
    if dry:
        common += ["--model.init_args.hidden_size", 8]
    fit(*common, "--experiment", "whole", *callback("FinalWeights", path=out / "whole.pt"))
    try:
        fit(*common, "--experiment", "cut", *callback("CtrlCAtStep", step=10))
    except SystemExit as stop:
        if stop.code != 128 + signal.SIGINT:
            raise
    else:
        raise RuntimeError("the run was not stopped at step 10")
    (cut,) = Path("logs/cut").glob("version_*")
    fit("-c", cut / "config.yaml", "--ckpt_path", "last",
        *callback("FinalWeights", path=out / "resumed.pt"))  # fmt: skip
    whole, resumed = torch.load(out / "whole.pt"), torch.load(out / "resumed.pt")
    diff = max((whole[k].float() - resumed[k].float()).abs().max().item() for k in whole)
    same = all(torch.equal(whole[k], resumed[k]) for k in whole)
    if diff > 1e-5:
        raise RuntimeError(f"resumed weights differ from the whole run's by up to {diff:.2e}")
    return f"bitwise equal: {same}; largest difference {diff:.2e}"


def benchmark(dry: bool, out: Path, repeats: int) -> dict:
    """The ResNet-50 workload of scripts/bench/benchmark.py --gpu; dry, its config at toy sizes (a
    ResNet-18 on 32 px images) through the same two paths (the template, the hand-written loop)
    in this process, whose per-step losses must agree."""
    if dry:
        sys.path.insert(0, str(BENCH))
        from bench_paths import measure_hand_written, measure_template

        toy = ["-c", CONFIGS / "image" / "resnet50_throughput.yaml", "--model.init_args.backbone",
            "resnet18", "--model.init_args.image_size", 32, "--data.init_args.image_size", 32,
            "--data.init_args.num_samples", 12, "--data.init_args.num_classes", 10,
            "--data.init_args.batch_size", 4]  # fmt: skip
        toy = list(map(str, toy))
        template, hand = (
            measure_template(toy, 2, 1, False, False),
            measure_hand_written(toy, 2, 1, False),
        )
        if template["losses"] != hand["losses"]:
            raise RuntimeError(f"the paths' losses differ: {template['losses']}, {hand['losses']}")
        return {"template_samples_per_s": template["samples_per_s"],
            "hand_samples_per_s": hand["samples_per_s"]}  # fmt: skip
    command = [sys.executable, BENCH / "benchmark.py", "--out", out / "bench", "--gpu",
        "--only", "resnet50_224px", "--repeats", repeats]  # fmt: skip
    subprocess.run(list(map(str, command)), check=True, capture_output=True, text=True)
    return json.loads((out / "bench" / "results.json").read_text())["workloads"]


def machine() -> dict:
    import lightning

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU dry run)"
    return {"gpu": name, "torch": torch.__version__, "lightning": lightning.__version__,
        "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "gpu_check")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, at toy sizes")
    parser.add_argument("--repeats", type=int, default=2, help="of the benchmark's processes")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # the runs' logs/ go here, a fresh logs/ each time
    shutil.rmtree("logs", ignore_errors=True)
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no GPU visible (torch.cuda.is_available() is False); --dry-run?")
    steps = {name: (fit, flags) for name, flags in overlays(args.dry_run, out).items()}
    steps["exact resume"] = (exact_resume, [args.dry_run, out])
    ddp = ["-c", CONFIGS / "sequence" / "gru.yaml", "--trainer.max_steps", 3]
    ddp += ["-c", TRAINER / "ddp.yaml"]
    ddp += ["--trainer.accelerator", "cpu", "--trainer.devices", 1] if args.dry_run else []
    steps["ddp.yaml on one device"] = (fit, ddp)  # last: it leaves a process group behind
    steps["benchmark.py --gpu"] = (benchmark, [args.dry_run, out, args.repeats])
    results = {"machine": machine(), "dry_run": args.dry_run, "steps": {}}
    for name, (run, step_args) in steps.items():
        started = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            shown = run(*step_args)
            record = {"ok": True, "shown": shown}
        except BaseException as error:  # noqa: BLE001 (SystemExit too): recorded, next step
            detail = traceback.format_exc()[-2000:]
            if isinstance(error, subprocess.CalledProcessError):
                detail = (error.stderr or "")[-2000:]
            record = {"ok": False, "error": detail}
        record["seconds"] = round(time.perf_counter() - started, 1)
        if torch.cuda.is_available():
            record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        results["steps"][name] = record
        print(f"{name}: {'ok' if record['ok'] else 'FAILED'} ({record['seconds']} s)", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    failed = [name for name, record in results["steps"].items() if not record["ok"]]
    print(f"results: {out / 'results.json'}" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
