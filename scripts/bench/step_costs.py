"""What each part of the template costs a training step: remove one part at a time, in one process.

The benchmark (`scripts/bench/benchmark.py`) says how far the template is from Lightning's bare
loop; this says which of the template's parts make the difference. Every variant trains the same
workload in the same process, taking turns over `--rounds`, and its figure is the median step's
CPU time of the main thread (one torch thread): a busy machine moves it less than wall time.

    python scripts/bench/step_costs.py              # (c) GRU-8 at batch 8: 400 steps, 4 rounds
    python scripts/bench/step_costs.py --steps 50 --rounds 1

Variants: the template as `fit` runs it; Lightning's bare loop (benchmark.py's "Lightning
alone"); the template's model in the bare loop, and the bare model in the template's Trainer;
the template without its training metrics; without all its callbacks; without each callback.
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning import Callback, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_paths import bare_model, build  # noqa: E402
from benchmark import WORKLOADS  # noqa: E402


class StepClock(Callback):
    """The main thread's CPU time at the start of each step after the warm-up; stops the run."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.marks, self.done = warmup, steps, [], 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if self.done >= self.warmup:
            self.marks.append(time.thread_time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.done += 1
        if self.done == self.warmup + self.steps:
            trainer.should_stop = True


class Without(Callback):
    """Takes callbacks out once fit has added the model's own (`configure_callbacks`)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def on_fit_start(self, trainer: Trainer, pl_module: object) -> None:
        trainer.callbacks[:] = [c for c in trainer.callbacks if type(c).__name__ not in self.names]


def step_ms(args: list[str], warmup: int, steps: int, variant: dict) -> float:
    cli = build([*args, "--trainer.max_epochs", "-1", "--trainer.logger.init_args.save_dir", "."])
    model, clock = cli.model, StepClock(warmup, steps)
    if variant.get("bare_model"):
        bare_model(model)
    if variant.get("no_training_metrics"):
        model.apply_training_metrics = lambda: None
        model.unapplied = _Discard()
    if variant.get("bare_trainer"):
        trainer = Trainer(
            accelerator="cpu", devices=1, max_epochs=-1, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[clock],
        )  # fmt: skip
    else:
        trainer = cli.trainer
        trainer.callbacks += [Without(variant.get("without", set())), clock]
    trainer.fit(model, datamodule=cli.datamodule)
    return statistics.median(b - a for a, b in itertools.pairwise(clock.marks)) * 1e3


class _Discard(list):
    def append(self, item: object) -> None:
        pass


CALLBACKS = [
    "RunResults", "LearningRateMonitor", "StopOnNonFiniteLoss", "LastCheckpoint",
    "RunConfigFile", "RichModelSummary", "BestAndLastCheckpoint", "BackboneFreeze",
]  # fmt: skip
VARIANTS = {
    "template": {},
    "Lightning alone": {"bare_model": True, "bare_trainer": True},
    "template model, bare Trainer": {"bare_trainer": True},
    "bare model, template Trainer": {"bare_model": True},
    "no training metrics": {"no_training_metrics": True},
    "no callbacks": {"without": set(CALLBACKS)},
    **{f"without {name}": {"without": {name}} for name in CALLBACKS},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="tiny_overhead", choices=list(WORKLOADS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    options = parser.parse_args()
    torch.set_num_threads(1)  # as `python -m project` runs (launch_checks.default_threads)
    args, _, warmup, what = WORKLOADS[options.workload]
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:  # the runs' logs, as benchmark.py's
        os.chdir(folder)
        names = list(VARIANTS)
        for round_ in range(options.rounds):
            # a different variant goes first each round: the first one in a round measured
            # ~1 ms slower on (a), whatever it was, which read as a cost of the template
            start = round_ * len(names) // options.rounds
            for name in names[start:] + names[:start]:
                times[name].append(step_ms(args, warmup, options.steps, VARIANTS[name]))
    base = statistics.median(times["template"])
    print(f"{what}: median step, main thread's CPU time, {options.rounds} rounds\n")
    print("| variant | ms/step | against the template |\n| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median - base:+.3f} |")


if __name__ == "__main__":
    main()
