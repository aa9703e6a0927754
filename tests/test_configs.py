"""The experiments and debug overlays of configs/ parse and run (which test exercises each
config: tests/test_coverage.py)."""

from pathlib import Path

import pytest

from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli, run_dirs

EXPERIMENTS = sorted((CONFIGS / "sequence").glob("*.yaml"))
DEBUG_OVERLAYS = sorted((CONFIGS / "debug").glob("*.yaml"))
DEFAULT = SEQUENCE / "gru.yaml"


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_prints_its_config(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:
        cli("fit", "-c", config, "--print_config")
    assert exit.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


@pytest.mark.parametrize("overlay", DEBUG_OVERLAYS, ids=lambda p: p.stem)
def test_overlay_prints_its_config(overlay: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli("fit", "-c", DEFAULT, "-c", overlay, "--print_config")
    assert "trainer:" in capsys.readouterr().out


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_runs_one_batch(config: Path, workdir: Path) -> None:
    cli("fit", "-c", config, "-c", CONFIGS / "debug" / "fast_dev_run.yaml", *QUIET)


@pytest.mark.parametrize("overlay", DEBUG_OVERLAYS, ids=lambda p: p.stem)
def test_debug_overlay_runs(overlay: Path, workdir: Path) -> None:
    # two epochs are enough to show the overlay works; the overlay's own length is for users
    cli("fit", "-c", DEFAULT, "-c", overlay, "--trainer.max_epochs", "2", *QUIET)
    runs = run_dirs(workdir, "gru")
    if overlay.stem == "fast_dev_run":
        assert runs == []  # fast_dev_run writes no logs
        return
    (run,) = runs
    assert (run / "checkpoints" / "last.ckpt").exists()
    if overlay.stem == "profiler":
        assert "Action" in (run / "fit-profile.txt").read_text()
