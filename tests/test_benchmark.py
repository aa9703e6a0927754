"""The benchmark harness runs and compares like with like (speed targets live in its report)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_template_and_hand_written_loop_take_identical_steps(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench" / "benchmark.py", "--only", "tiny_overhead",
         "resnet18_32px", "time_to_accuracy", "--repeats", "1", "--quick", "--out", tmp_path],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    workloads = results["workloads"]
    assert set(workloads) == {"tiny_overhead", "resnet18_32px"}
    for result in workloads.values():  # same batches, same initial weights, same optimizer
        assert result["losses_agree_5_decimals"] and result["max_loss_difference"] == 0.0
        assert result["template_samples_per_s"] > 0 and result["hand_samples_per_s"] > 0
        for ratio in (
            "ratio", "cpu_ratio", "lightning_ratio", "lightning_cpu_ratio", "over_lightning",
            "over_lightning_cpu",
        ):  # fmt: skip
            low, median, high = (result[ratio][k] for k in ("low", "median", "high"))
            assert 0 < low <= median <= high
    assert "| (c) per-step overhead" in (tmp_path / "results.md").read_text()
    # both paths train the default experiment on its schedule: 2 epochs, each probed
    for path in ("template", "hand"):
        run = results["time_to_accuracy"][path]
        assert 0.1 < run["final_accuracy"] <= 1 and run["seconds"] > 0


@pytest.mark.slow
def test_step_costs_times_every_variant(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench" / "step_costs.py", "--steps", "20",
         "--rounds", "1"],
        cwd=tmp_path, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")]
    times = {row[0].removeprefix("| "): float(row[1]) for row in rows[2:]}
    assert {"template", "Lightning alone", "no callbacks", "without RunResults"} <= set(times)
    assert all(ms > 0 for ms in times.values())
    assert not list(tmp_path.iterdir())  # its runs' logs go to a folder of its own
