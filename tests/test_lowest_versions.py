"""The lowest versions pyproject.toml allows, installed for real in a fresh environment: each
dependency at its lower bound (uv's `--resolution lowest-direct`, each held to its bound's
release), then a short fit and the command line's error tests run there.

torch and torchvision are the exception: their lower bounds (2.7, 0.22) are CUDA builds of several
GB on PyPI, and this machine's disk holds only the releases the main environment runs (2.14.1,
0.29.1), so both are pinned to those. A bound that no install can meet, or that the code no longer
runs on, fails here (it found that Lightning 2.6 needs jsonargparse 4.39, and this project 4.51)."""

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from project.cli.lightning_noise import SILENCED_LINES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("torch", "torchvision", "pytest")  # at the versions running this test
EXTRAS = ("digits",)  # scikit-learn: the digits data that tests/test_bad_inputs.py reads
# tests of the command line's errors, class switches, and what Lightning and jsonargparse do
# beyond their documented API
TESTS = ["test_bad_inputs.py", "test_messages.py", "test_carried_settings.py",
         "test_jsonargparse_api.py", "test_lightning_api.py"]  # fmt: skip


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def lower_bound(requirement: Requirement) -> Version:
    (bound,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return bound


def pip_indexes() -> list[str]:
    """The extra indexes pip is set up with here (the disk's torch wheels): uv reads no pip
    configuration."""
    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.extra-index-url"],
        capture_output=True, text=True,
    )  # fmt: skip
    return configured.stdout.split() if configured.returncode == 0 else []


@pytest.fixture(scope="module")
def lowest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment's python, holding the lowest allowed versions."""
    folder = tmp_path_factory.mktemp("lowest")
    python = folder / "venv" / "bin" / "python"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", str(python.parents[1]), "--python", sys.executable],
                   check=True)  # fmt: skip
    wanted, held = [], []
    for requirement in requirements():
        if requirement.name in PINNED:
            wanted.append(f"{requirement.name}=={version(requirement.name)}")
        else:
            wanted.append(str(requirement))
            # `>=1.24` alone may resolve to 1.26 to suit a newer transitive dependency
            held.append(f"{requirement.name}=={lower_bound(requirement)}.*")
    wanted.append(f"pytest=={version('pytest')}")
    (folder / "held.txt").write_text("\n".join(held) + "\n")
    indexes = [arg for url in pip_indexes() for arg in ("--index", url)]
    subprocess.run(
        [*uv, "pip", "install", "-q", "--python", str(python), "--resolution", "lowest-direct",
         "--index-strategy", "unsafe-best-match", *indexes, "-c", str(folder / "held.txt"),
         *wanted],
        check=True,
    )  # fmt: skip
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(python), *args], cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_each_dependency_is_installed_at_its_lower_bound(lowest: Path) -> None:
    code = "import json, importlib.metadata as m; print(json.dumps({d.name.lower(): d.version "
    code += "for d in m.distributions()}))"
    installed = json.loads(run(lowest, "-c", code, cwd=ROOT).stdout)
    for requirement in requirements():
        got = Version(installed[requirement.name.lower()])
        if requirement.name in PINNED:
            assert got == Version(version(requirement.name))
        else:
            bound = lower_bound(requirement)
            assert got.release[: len(bound.release)] == bound.release, (requirement, got)


def test_a_short_fit_runs_at_the_lowest_versions(lowest: Path, tmp_path: Path) -> None:
    fit = run(lowest, "-m", "project", "fit", "-c", str(ROOT / "configs/sequence/gru.yaml"),
              "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
              "--trainer.limit_val_batches", "1", cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    metrics = json.loads((tmp_path / "logs/gru/version_0/metrics.json").read_text())
    assert 0 <= metrics["val/acc"] <= 1
    printed = fit.stdout + fit.stderr
    assert "Traceback" not in printed
    # Lightning 2.6.0 advertises litmodels where 2.6.6 advertises litlogger: neither shows
    assert "💡" not in printed and not any(line in printed for line in SILENCED_LINES)


def test_the_cli_error_tests_pass_at_the_lowest_versions(lowest: Path) -> None:
    # the silenced lines' test checks they are still printed: Lightning 2.6.0 prints no
    # litlogger tip at all (2.6.6 does), so it can only hold at the newest allowed release
    tests = run(lowest, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                "-k", "not silenced_are_those_lightning_prints",
                *[f"tests/{name}" for name in TESTS], cwd=ROOT)  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-5000:]
