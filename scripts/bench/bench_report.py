"""The benchmark's figures: ratios over rounds, and the markdown table of docs/benchmarks.md."""

import os
import platform
import statistics
from pathlib import Path


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
    # the measurements' threads: the CLI's default (launch_checks.default_threads)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    return f"CPU: {cpu}, {os.cpu_count()} cores, {threads} torch thread(s) per run"


def ratios(runs: list[dict], hand: list[dict], key: str = "samples_per_s") -> list[float]:
    """Each run's samples/s over the hand loop's of its round (by wall or by CPU time)."""
    return [r[key] / h[key] for r, h in zip(runs, hand, strict=True) if r[key] and h[key]]


def summary(values: list[float]) -> dict:
    """Median and range over the rounds: the range is what this machine resolves today."""
    if not values:
        return {"median": None, "low": None, "high": None}
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def markdown(results: dict) -> str:
    lines = [
        f"Measured {results['date']} on {results['machine']}.",
        "",
        "| workload | template samples/s | hand-written samples/s | template / hand (wall) "
        "| template / hand (CPU time) | Lightning alone / hand (wall; CPU time) "
        "| template / Lightning alone (wall; CPU time) "
        "| losses agree (5 dp) | peak MB template / hand |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["workloads"].values():
        lines.append(
            f"| {r['what']} | {r['template_samples_per_s']:.0f} | {r['hand_samples_per_s']:.0f} "
            f"| {spread(r['ratio'])} | {spread(r['cpu_ratio'])} "
            f"| {spread(r['lightning_ratio'])}; {spread(r['lightning_cpu_ratio'])} "
            f"| {spread(r['over_lightning'])}; {spread(r['over_lightning_cpu'])} "
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
