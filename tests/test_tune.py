"""`python -m project tune`: Lightning's finders behind one command, whose overlay `fit` takes."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import QUIET, SEQUENCE, cli, run_dirs
from tests.test_messages import error_line

GRU = SEQUENCE / "gru.yaml"
SMALL = ["--model.init_args.hidden_size", "16", "--data.init_args.batch_size", "250", *QUIET]


def tuned_overlay(workdir: Path) -> tuple[Path, dict]:
    (run,) = sorted((workdir / "logs" / "gru" / "tune").glob("version_*"))
    return run, yaml.safe_load((run / "tuned.yaml").read_text())


def test_tune_writes_an_overlay_fit_takes(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """Both finders (the batch search forced on a CPU): the overlay's batch stays within the
    steps-per-epoch ceiling and its rate within the range tested; the curve is a PNG and a
    TensorBoard image; `fit -c <exp> -c tuned.yaml` trains with both values."""
    cli("tune", "-c", GRU, *SMALL, "--batch_size_search", "true", "--min_steps_per_epoch", "5",
        "--lr_steps", "30", "--min_lr", "1e-5", "--max_lr", "1")  # fmt: skip
    assert "next: python -m project fit" in capsys.readouterr().err
    run, overlay = tuned_overlay(workdir)
    batch, lr = overlay["data"]["init_args"]["batch_size"], overlay["optimizer"]["init_args"]["lr"]
    assert 250 <= batch <= 3500 // 5, batch  # 3500 training samples, 5 steps per epoch at least
    assert 1e-5 <= lr <= 1, lr
    assert Image.open(run / "lr_find.png").size[0] > 300
    events = EventAccumulator(str(run))
    events.Reload()
    assert "tune/lr_find" in events.Tags()["images"]

    cli("fit", "-c", GRU, "-c", run / "tuned.yaml", *QUIET, "--trainer.max_steps", "2")
    (fitted,) = run_dirs(workdir, "gru")
    config = yaml.safe_load((fitted / "config.yaml").read_text())
    assert config["data"]["init_args"]["batch_size"] == batch
    assert config["optimizer"]["init_args"]["lr"] == lr


def test_tune_keeps_the_batch_on_a_cpu(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    cli("tune", "-c", GRU, *SMALL, "--lr_steps", "20")
    assert "batch size kept at 250" in capsys.readouterr().err
    _, overlay = tuned_overlay(workdir)
    assert overlay["data"]["init_args"]["batch_size"] == 250


@pytest.mark.slow
def test_tuned_default_gru_reaches_97_percent(workdir: Path) -> None:
    """What the README promises: `tune` on the default experiment, then a fit with its overlay,
    reaches the default's accuracy (>= 97% on MNIST-1D's test set)."""
    cli("tune", "-c", GRU, *QUIET)
    run, _ = tuned_overlay(workdir)
    cli("fit", "-c", GRU, "-c", run / "tuned.yaml", "--test_after_fit", "true", *QUIET)
    (fitted,) = run_dirs(workdir, "gru")
    accuracy = json.loads((fitted / "metrics.json").read_text())["test/acc"]
    assert accuracy >= 0.97, accuracy
    print(f"tuned GRU: test accuracy {accuracy:.4f}")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--min_lr", "1", "--max_lr", "0.1"], "need 0 < --min_lr < --max_lr"),
        (["--min_steps_per_epoch", "0"], "--min_steps_per_epoch must be >= 1"),
    ],
    ids=["lr-range-reversed", "no-steps"],
)
def test_bad_tune_options_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture, flags: list[str], expected: str
) -> None:
    line = error_line(capsys, "tune", "-c", GRU, *flags)
    assert line.startswith("error:") and expected in line, line
    assert not (workdir / "logs").exists() or not list((workdir / "logs").rglob("tuned.yaml"))


def test_the_finder_curve_of_a_constant_loss_is_flat() -> None:
    """Lightning 2.6's smoothing as it runs (a running average divided by 1 - 0.98^(i + 2)
    after batch i): its first point is half a constant loss; corrected, every point equals it."""
    from project.cli.tune import unbiased

    average, lightning = 0.0, []
    for i in range(50):
        average = 0.98 * average + 0.02 * 2.3
        lightning.append(average / (1 - 0.98 ** (i + 2)))
    assert lightning[0] == pytest.approx(2.3 / 1.98)
    assert unbiased(lightning) == pytest.approx([2.3] * 50)


def test_the_suggestion_is_a_tenth_of_the_lowest_loss_rate() -> None:
    from project.cli.tune import tenth_of_lowest

    lrs = [10 ** (-5 + i / 10) for i in range(50)]  # 1e-5 … ~0.8
    losses = [2.3 - 0.5 * (lr > 1e-3) * min(lr, 0.1) / 0.1 + 5 * (lr > 0.3) for lr in lrs]
    assert tenth_of_lowest(lrs, losses) == pytest.approx(0.01, rel=0.3)
    assert tenth_of_lowest(lrs[:5], losses[:5]) is None  # too few points after the skipped start
