"""What a finished run offers: test/predict from its folder, predictions.csv, the summary."""

import contextlib
import csv
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from project.cli.summary import print_run_summary, summary_lines
from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli, cli_process, run_dirs, saved_step


def test_fit_ends_with_a_summary(capsys: pytest.CaptureFixture, finished_run: Path) -> None:
    summary = capsys.readouterr().out
    assert f"best checkpoint: {Path('logs/gru/version_0/checkpoints')}" in summary
    assert "best val/loss: " in summary and "test: test/acc " in summary
    command = f"python -m project test -c {Path('logs/gru/version_0')}/config.yaml --ckpt_path best"
    assert command in summary


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


def test_a_runs_checkpoint_with_the_experiment_config_predicts_into_that_run(
    finished_run: Path,
) -> None:
    checkpoint = finished_run / "checkpoints" / "last.ckpt"
    cli("predict", "-c", SEQUENCE / "gru.yaml", "--ckpt_path", checkpoint, *QUIET)
    assert (finished_run / "predictions.csv").is_file()
    assert len(run_dirs(finished_run.parents[2], "gru")) == 1  # no new version folder


def test_best_without_a_run_config_is_a_one_line_error(workdir: Path) -> None:
    with pytest.raises(SystemExit) as exit:
        cli("test", "-c", SEQUENCE / "gru.yaml", "--ckpt_path", "best", *QUIET)
    assert exit.value.code == 2


STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir: Path) -> Iterator[Callable[..., dict]]:
    """A TensorBoard server (its default loader) over `logdir`; yields `get(path, body=None)`,
    which asks its HTTP API, once it serves a run."""
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).parent / "tensorboard", "--logdir", logdir,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/data/plugin"

    def get(path: str, body: dict | None = None) -> dict:
        if path.startswith("/"):  # a whole path, e.g. an image's
            url = f"http://127.0.0.1:{port}{path}"
        else:
            url = f"{base}/{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                json.load(response)
                if "json" in response.headers["Content-Type"]
                else response.read()
            )

    try:
        for _ in range(120):  # the server takes a few seconds to start and read the logs
            try:
                if get("scalars/tags"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("TensorBoard did not serve the runs within 60 s")
        yield get
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_tensorboard_serves_curves_hparams_with_metrics_and_images(finished_run: Path) -> None:
    # an image model's run beside the GRU's, as after `make train` and an image experiment
    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    cli(
        "fit", "-c", CONFIGS / "image" / "small_cnn.yaml", *tiny, "--test_after_fit", "true", *QUIET
    )
    with tensorboard(finished_run.parents[1]) as get:
        scalars = get("scalars/tags")["gru/version_0"]
        assert {"train/loss_step", "val/acc", "val/acc_best", "test/acc", "lr-Adam"} <= set(scalars)

        images = get("images/tags")["gru/version_0"]
        assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(images)
        texts = ["config/text_summary", "provenance/text_summary"]
        assert sorted(get("text/tags")["gru/version_0"]) == texts
        images = get("images/tags")["small_cnn/version_0"]
        assert {"val/predictions", "test/predictions"} <= set(images)
        (shown,) = get("images/images?run=small_cnn/version_0&tag=test/predictions&sample=0")
        png = get(f"/data/plugin/images/individualImage?{shown['query']}")
        grid = Image.open(io.BytesIO(png))
        assert grid.size == (410, 466)  # 16 captioned tiles of 100×114 pixels, 4 by 4

        groups = get(
            "hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": STATUSES,
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 10,
            },
        )["sessionGroups"]
        by_model = {
            g["hparams"].get("model/cell", g["hparams"].get("model/backbone")): g for g in groups
        }
        assert set(by_model) == {"gru", "small_cnn"}  # one row per run, comparable in one table
        group = by_model["gru"]
        # the run's settings from its config, by the names a person uses, not LightningCLI's
        hparams = group["hparams"]
        assert not [name for name in hparams if "_class_path" in name or "/_" in name]
        assert hparams["model"] == "SequenceClassifier" and hparams["data"] == "MNIST1DDataModule"
        assert hparams["optimizer"] == "Adam" and hparams["optimizer/lr"] == 0.01
        assert hparams["data/batch_size"] == 100 and hparams["trainer/max_epochs"] == 2
        assert hparams["lr_scheduler"] == "WarmupCosineLR" and hparams["seed"] == 42
        assert hparams["model/decay_norms_and_biases"] == "true"  # not 1.0000
        written = yaml.safe_load((finished_run / "hparams.yaml").read_text())
        assert list(written)[:4] == ["model", "data", "optimizer", "lr_scheduler"]
        assert written["optimizer"]["class"] == "Adam" and written["optimizer"]["lr"] == 0.01
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        final = json.loads((finished_run / "metrics.json").read_text())
        assert metrics["test/acc"] == pytest.approx(final["test/acc"])
        assert metrics["val/acc"] == pytest.approx(final["val/acc"])


def test_progress_bar_is_rich_unless_turned_off(workdir: Path) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    from project.cli import make_cli

    shown = make_cli(["-c", str(SEQUENCE / "gru.yaml")], run=False)
    assert isinstance(shown.trainer.progress_bar_callback, RichProgressBar)
    hidden = make_cli(["-c", str(SEQUENCE / "gru.yaml"), *QUIET], run=False)
    assert hidden.trainer.progress_bar_callback is None


@pytest.mark.slow
def test_predict_under_ddp_matches_one_process(finished_run: Path) -> None:
    config = finished_run / "config.yaml"
    cli("predict", "-c", config, "--ckpt_path", "last", *QUIET)
    alone = (finished_run / "predictions.csv").read_text()
    (finished_run / "predictions.csv").unlink()
    result = cli_process(
        "predict", "-c", config, "--ckpt_path", "last", "--trainer.accelerator", "cpu",
        "--trainer.devices", "2", "--trainer.strategy", "ddp", *QUIET,
        cwd=finished_run.parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with (finished_run / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    # each rank predicts half; the merged file holds every sample once, in dataset order
    assert [int(r["index"]) for r in rows] == list(range(1000))
    expected = list(csv.DictReader(alone.splitlines()))
    for got, want in zip(rows, expected, strict=True):
        assert got["predicted"] == want["predicted"]
        assert float(got["prob_3"]) == pytest.approx(float(want["prob_3"]), abs=1e-5)


@pytest.mark.slow
def test_evaluating_a_run_keeps_its_curves_whole_in_tensorboard(finished_run: Path) -> None:
    """validate, test and predict log into the run's folder after its training curves: the
    default loader of TensorBoard still shows every epoch's val/acc and confusion matrix."""
    for command in ("validate", "test", "predict"):
        cli(command, "-c", finished_run / "config.yaml", "--ckpt_path", "best", *QUIET)
    last_step = saved_step(finished_run)
    with tensorboard(finished_run.parents[1]) as get:
        run = "run=gru/version_0"
        curve = get(f"scalars/scalars?{run}&tag=val/acc")
        steps = [step for _, step, _ in curve]
        # one point per epoch (2), the fit's own validation of its best checkpoint at its last
        # step, then the `validate` just run, after it: no step goes back
        assert len(steps) == 4 and steps == sorted(steps), steps
        assert steps[1] < last_step == steps[2] < steps[3], steps
        matrices = get(f"images/images?{run}&tag=val/confusion_matrix")
        assert len({m["step"] for m in matrices}) == 3, matrices
        assert len(get(f"scalars/scalars?{run}&tag=train/loss_epoch")) == 2
        epochs = [value for _, step, value in get(f"scalars/scalars?{run}&tag=epoch")]
        assert epochs == sorted(epochs), epochs  # no drop to 0 at the end


def test_results_on_other_data_go_beside_the_runs_own(workdir: Path) -> None:
    """`test` of a run on another file writes metrics-<file>.json, and `predict` on new,
    unlabelled data predictions-<file>.csv; the run's own metrics.json keeps its numbers."""
    generator = np.random.default_rng(0)
    for name, size in (("train", 40), ("test", 21), ("other", 13), ("new", 5)):
        x = generator.normal(size=(size, 12, 2)).astype(np.float32)
        labels = {} if name == "new" else {"y": generator.integers(0, 3, size=size)}
        np.savez(workdir / f"{name}.npz", x=x, **labels)
    data = "--data SequenceFileDataModule --data.train train.npz --data.test test.npz".split()
    cli("fit", "-c", SEQUENCE / "gru.yaml", *data, "--trainer.max_epochs", "1", *QUIET)
    (run,) = run_dirs(workdir, "gru")
    cli("test", "-c", run / "config.yaml", "--ckpt_path", "best", *QUIET)
    own = (run / "metrics.json").read_text()
    cli("test", "-c", run / "config.yaml", "--ckpt_path", "best",
        "--data.init_args.test", "other.npz", *QUIET)  # fmt: skip
    assert (run / "metrics.json").read_text() == own
    other = json.loads((run / "metrics-other.json").read_text())
    assert set(other) == {k for k in json.loads(own) if k.startswith("test/")}
    cli("predict", "-c", run / "config.yaml", "--ckpt_path", "best",
        "--data.init_args.predict", "new.npz", *QUIET)  # fmt: skip
    assert not (run / "predictions.csv").exists()
    with (run / "predictions-new.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 5


@pytest.mark.slow
def test_a_summary_never_fails_a_run_and_tells_a_resume_apart(
    finished_run: Path, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    """Resumed from a checkpoint outside any run folder, the run knows no best score: the
    summary says what it can, and what this process trained, and the fit exits 0."""
    outside = workdir / "outside.ckpt"
    shutil.copy(finished_run / "checkpoints" / "last.ckpt", outside)
    steps = saved_step(finished_run)
    capsys.readouterr()
    cli("fit", "-c", SEQUENCE / "gru.yaml", "--ckpt_path", outside, "--trainer.max_epochs", "3",
        *QUIET)  # fmt: skip
    summary = capsys.readouterr().out
    per_epoch = steps // 2
    assert (
        f"resumed at step {steps}, trained {per_epoch} steps to step {steps + per_epoch}; "
        "the run has 3 epochs" in summary
    )
    assert "no summary" not in summary


def test_a_summary_without_a_best_score_or_with_a_broken_part_still_prints() -> None:
    """What made a Slurm job FAILED after it trained: `float(None)` for an unknown best score."""
    checkpoint = SimpleNamespace(
        best_model_path="logs/x/version_0/checkpoints/best-epoch=3-step=8.ckpt",
        best_model_score=None,
        monitor="val/loss",
    )
    trainer = SimpleNamespace(
        current_epoch=4, global_step=10, checkpoint_callback=checkpoint, callback_metrics={},
        logger=None, callbacks=[],
    )  # fmt: skip
    lines = summary_lines(trainer, 1.0, None)
    assert lines[1] == f"best checkpoint: {checkpoint.best_model_path}" and len(lines) == 2
    broken = SimpleNamespace(current_epoch=4, global_step=10)  # no checkpoint_callback at all
    print_run_summary(broken, 1.0)  # prints a line saying so, raises nothing
