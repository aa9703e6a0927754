"""What a finished run offers: test/predict from its folder, predictions.csv, the summary."""

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, QUIET, cli, run_dirs


@pytest.fixture
def finished_run(workdir: Path, capsys: pytest.CaptureFixture) -> Path:
    cli(
        "fit",
        "-c",
        CONFIGS / "gru.yaml",
        "--trainer.max_epochs",
        "2",
        "--test_after_fit",
        "true",
        *QUIET,
    )
    summary = capsys.readouterr().out
    (run,) = run_dirs(workdir, "gru")
    assert f"best checkpoint: {Path('logs/gru/version_0/checkpoints')}" in summary
    assert (
        f"python -m project test -c {Path('logs/gru/version_0')}/config.yaml --ckpt_path best"
        in summary
    )
    return run


def test_test_with_the_runs_config_reproduces_its_numbers(finished_run: Path) -> None:
    before = json.loads((finished_run / "metrics.json").read_text())
    config_before = (finished_run / "config.yaml").read_text()
    cli("test", "-c", finished_run / "config.yaml", "--ckpt_path", "best", *QUIET)
    after = json.loads((finished_run / "metrics.json").read_text())
    assert after["test/acc"] == pytest.approx(before["test/acc"], abs=1e-6)
    assert (finished_run / "config.yaml").read_text() == config_before  # the fit config stays
    assert len(run_dirs(finished_run.parents[2], "gru")) == 1  # no new version folder


def test_predict_writes_every_test_sample_once_in_order(finished_run: Path) -> None:
    cli("predict", "-c", finished_run / "config.yaml", "--ckpt_path", "last", *QUIET)
    with (finished_run / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["index"]) for r in rows] == list(range(1000))
    assert list(rows[0]) == ["index", "predicted", *(f"prob_{k}" for k in range(10))]
    probabilities = [float(rows[0][f"prob_{k}"]) for k in range(10)]
    assert sum(probabilities) == pytest.approx(1, abs=1e-4)
    assert int(rows[0]["predicted"]) == max(range(10), key=probabilities.__getitem__)


def test_best_without_a_run_config_is_a_one_line_error(workdir: Path) -> None:
    with pytest.raises(SystemExit) as exit:
        cli("test", "-c", CONFIGS / "gru.yaml", "--ckpt_path", "best", *QUIET)
    assert exit.value.code == 2
