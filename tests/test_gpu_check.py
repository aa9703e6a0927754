"""scripts/gpu_check.sh (`make gpu-check`), the check to run the day a GPU is lent, in its CPU dry
run: the same steps at toy sizes, each recorded in one results file."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

STEPS = {
    "gpu (fp32, TF32, channels-last)",
    "gpu + bf16",
    "gpu + fp16",
    "gpu + compile + bf16",
    "gru: gpu + bf16",
    "exact resume",
    "ddp.yaml on one device",
    "benchmark.py --gpu",
}


def test_the_gpu_check_dry_run_passes_every_step(tmp_path: Path) -> None:
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    result = subprocess.run(
        [ROOT / "scripts" / "gpu_check.sh"], env=env, capture_output=True, text=True, timeout=600
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    failed = {name: step.get("error") for name, step in results["steps"].items() if not step["ok"]}
    assert result.returncode == 0 and not failed, failed or result.stderr[-3000:]
    assert set(results["steps"]) == STEPS and results["dry_run"] is True
    assert results["steps"]["exact resume"]["shown"].startswith("bitwise equal: True")
    bench = results["steps"]["benchmark.py --gpu"]["shown"]
    assert bench["template_samples_per_s"] > 0 and bench["hand_samples_per_s"] > 0
