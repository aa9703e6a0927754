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
        [sys.executable, ROOT / "scripts" / "benchmark.py", "--only", "tiny_overhead",
         "resnet18_32px", "--repeats", "1", "--quick", "--out", tmp_path],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    workloads = json.loads((tmp_path / "results.json").read_text())["workloads"]
    assert set(workloads) == {"tiny_overhead", "resnet18_32px"}
    for result in workloads.values():  # same batches, same initial weights, same optimizer
        assert result["losses_agree_5_decimals"] and result["max_loss_difference"] == 0.0
        assert result["template_samples_per_s"] > 0 and result["hand_samples_per_s"] > 0
    assert "| (c) per-step overhead" in (tmp_path / "results.md").read_text()
