"""The loggers of configs/logger/, each against its real backend and read back through it: CSV
from its files, MLflow through its client (a local database, and in the slow tier a real
`mlflow server`), W&B from its offline run. Whatever the logger, a run has the same run folder
(`config.yaml`, `checkpoints/`, `metrics.json`), resumes the same way and takes the same Slurm
path."""

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli

mlflow = pytest.importorskip("mlflow")  # the `loggers` extra
wandb_records = pytest.importorskip("tests.wandb_records")

LOGGERS = ["tensorboard", "csv", "mlflow", "wandb", "tensorboard_mlflow"]
TINY = [
    *("--model.init_args.hidden_size", "8", "--trainer.max_epochs", "2"),
    *("--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", *QUIET),
]


def fit(logger: str, *args: object) -> None:
    cli("fit", "-c", SEQUENCE / "gru.yaml", "-c", CONFIGS / "logger" / f"{logger}.yaml", *args)
    if "wandb" in logger:
        import wandb

        wandb.finish()  # what the end of `python -m project` does: the offline run is written


def step_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["global_step"]


def the_run(workdir: Path, experiment: str, version: str = "version_0") -> Path:
    """The run folder, with what every run has whatever its logger."""
    run = workdir / "logs" / experiment / version
    assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert [p.name for p in (workdir / "logs" / experiment).iterdir()] == [version]
    return run


def mlflow_run(uri: str, experiment: str) -> "mlflow.entities.Run":
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def test_csv_writes_metrics_params_and_image_files(workdir: Path) -> None:
    fit("csv", *TINY, "--experiment", "csv")
    run = the_run(workdir, "csv")
    with (run / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    losses = [float(row["val/loss"]) for row in rows if row.get("val/loss")]
    assert len(losses) == 2  # one a validation
    metrics = json.loads((run / "metrics.json").read_text())
    assert losses[-1] == pytest.approx(metrics["val/loss"])
    assert "model/hidden_size: 8" in (run / "hparams.yaml").read_text()
    # no logger here takes images: the confusion matrices are files in the run folder
    assert len(list((run / "images" / "val" / "confusion_matrix").glob("step_*.png"))) == 2


@pytest.mark.parametrize("logger", ["mlflow", "tensorboard_mlflow"])
def test_mlflow_holds_params_metrics_per_step_images_and_the_checkpoint(
    workdir: Path, logger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{workdir / 'logs' / 'mlflow.db'}"  # the overlay's store without a server
    # named, not left to the overlay's default: MLflow keeps one store per process, and the
    # tests run one after another in one process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    fit(logger, *TINY, "--experiment", "flow")
    folder = the_run(workdir, "flow")
    check_mlflow_run(mlflow_run(uri, "flow"), uri, folder, images=("val/confusion_matrix",))
    # beside TensorBoard, which keeps its own files in the run folder as ever
    assert bool(list(folder.glob("events.out.tfevents.*"))) == (logger == "tensorboard_mlflow")


def test_the_tensorboard_overlay_is_the_default(capsys: pytest.CaptureFixture) -> None:
    printed = []
    for overlay in ([], ["-c", CONFIGS / "logger" / "tensorboard.yaml"]):
        with pytest.raises(SystemExit):
            cli("fit", "-c", SEQUENCE / "gru.yaml", *overlay, "--print_config")
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]


def check_mlflow_run(run: "mlflow.entities.Run", uri: str, folder: Path, images: tuple) -> None:
    client = mlflow.tracking.MlflowClient(uri)
    assert run.data.params["model/hidden_size"] == "8"
    assert run.data.params["optimizer/lr"] == "0.01"
    history = client.get_metric_history(run.info.run_id, "val/loss")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [m.step for m in history] == [3, 7]  # the step of each validation
    assert history[-1].value == pytest.approx(metrics["val/loss"])
    for tag in images:
        pictures = client.list_artifacts(run.info.run_id, tag)
        assert pictures and all(p.path.endswith(".png") for p in pictures), tag
    tags = run.data.tags
    assert Path(tags["best_checkpoint"]) == next((folder / "checkpoints").glob("best-*")).resolve()
    assert Path(tags["last_checkpoint"]) == (folder / "checkpoints" / "last.ckpt").resolve()
    assert tags["run_folder"] == str(folder.resolve())
    assert tags["mlflow.runName"] == f"{folder.parent.name}/{folder.name}"


def test_wandb_offline_run_holds_config_history_and_images(workdir: Path) -> None:
    fit("wandb", *TINY, "--experiment", "wb")
    folder = the_run(workdir, "wb")
    (offline,) = (folder / "wandb").glob("offline-run-*")
    offline = wandb_records.written(offline)
    config = wandb_records.config(offline)
    assert config["model/hidden_size"] == 8 and config["optimizer/lr"] == 0.01
    rows = wandb_records.history(offline)
    losses = [(r["trainer/global_step"], r["val/loss"]) for r in rows if "val/loss" in r]
    assert [step for step, _ in losses] == [3, 7]
    assert losses[-1][1] == pytest.approx(
        json.loads((folder / "metrics.json").read_text())["val/loss"]
    )
    pictures = list((offline / "files" / "media" / "images" / "val").glob("confusion_matrix_*.png"))
    assert len(pictures) == 2


# --- slow: a real MLflow server; resume and the Slurm path with every logger --------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a free loopback port, a SQLite store, artifacts served by it."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = 5600 + os.getpid() % 300
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # ~45 s on 2 busy cores
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        "mlflow server did not start: " + (folder / "server.log").read_text()
                    )
                time.sleep(1)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_tensorboard_and_an_mlflow_server_together(
    workdir: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image model, so both pictures are drawn: the confusion matrix and the grid."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    overlay = CONFIGS / "logger" / "tensorboard_mlflow.yaml"
    cli("fit", "-c", CONFIGS / "image" / "small_cnn.yaml", "-c", overlay, "--test_after_fit",
        "true", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
        "--trainer.limit_val_batches", "2", *QUIET)  # fmt: skip
    folder = the_run(workdir, "small_cnn")
    assert list(folder.glob("events.out.tfevents.*"))  # TensorBoard keeps its files there
    run = mlflow_run(mlflow_server, "small_cnn")
    client = mlflow.tracking.MlflowClient(mlflow_server)
    assert run.data.params["model/backbone"] == "small_cnn"
    # two epochs, and the best checkpoint validated again after fit
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 3
    assert "test/acc" in run.data.metrics
    for tag in ("val/confusion_matrix", "val/predictions", "test/confusion_matrix",
                "test/predictions"):  # fmt: skip
        assert client.list_artifacts(run.info.run_id, tag), tag
    assert Path(run.data.tags["last_checkpoint"]) == (folder / "checkpoints/last.ckpt").resolve()


@pytest.mark.slow
@pytest.mark.parametrize("logger", LOGGERS)
def test_resume_and_the_slurm_path_are_the_same_with_every_logger(
    workdir: Path, logger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit(logger, *TINY, "--experiment", logger)
    run = the_run(workdir, logger)
    fit(logger, "-c", run / "config.yaml", "--ckpt_path", "last", "--trainer.max_epochs", "3")
    assert step_of(run / "checkpoints" / "last.ckpt") == 12  # continued in its own folder
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    # a Slurm job: its own run folder; requeued, it resumes there
    job = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}  # fmt: skip
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    fit(logger, *TINY, "--experiment", logger)
    slurm = run.parent / "slurm-4242"
    assert step_of(slurm / "checkpoints" / "last.ckpt") == 8
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    fit(logger, *TINY[:2], "--trainer.max_epochs", "3", *TINY[4:], "--experiment", logger)
    assert step_of(slurm / "checkpoints" / "last.ckpt") == 12
    assert sorted(p.name for p in run.parent.iterdir() if p.is_dir()) == ["slurm-4242", "version_0"]
