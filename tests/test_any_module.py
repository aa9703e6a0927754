"""Any LightningModule (tests/plain_module.py, written as Lightning's docs write one) through
every subcommand: fit, validate, test, predict, resume, tune, search and a 2-rank DDP fit. What
it lacks for a feature is a one-line note, never a traceback."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import QUIET, ROOT, cli, cli_process, run_dirs

PLAIN = ["--model", "tests.plain_module.LitClassifier", "--data", "MNIST1DDataModule"]
SMALL = [
    *("--data.init_args.batch_size", "250", "--trainer.max_epochs", "2"),
    *("--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", *QUIET),
]
NO_BEST = "note: no best checkpoint by val/loss: the model does not log it"


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    result = cli_process(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def run_here(capsys: pytest.CaptureFixture, *args: object) -> tuple[str, str]:
    """`python -m project ARGS` in this process (quicker); its stdout and stderr."""
    capsys.readouterr()
    cli(*args)
    return capsys.readouterr()


def step_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["global_step"]


def test_a_plain_module_runs_through_every_subcommand(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    tmp_path = workdir
    given = ["--optimizer", "SGD", "--optimizer.lr", "0.1"]  # the module builds its own
    out, err = run_here(capsys, "fit", *PLAIN, *SMALL, *given, "--test_after_fit", "true")
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes[0].startswith("note: optimizer: not used: LitClassifier takes no `optimizer`")
    assert notes[1].startswith(NO_BEST) and "val_loss, val_acc" in notes[1]
    (folder,) = run_dirs(tmp_path, "default")
    checkpoints = folder / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["last.ckpt"]  # no best-k by a missing key
    assert step_of(checkpoints / "last.ckpt") == 8
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"val_loss", "val_acc", "test_acc"}  # its own names, its own stages
    assert "--ckpt_path last" in out  # what the summary offers exists
    config = folder / "config.yaml"
    for command in ("validate", "test", "predict"):
        run_here(capsys, command, "-c", config, "--ckpt_path", "last")
    with (folder / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1000 and len(rows[0]) == 11  # index and its 10 softmax values
    assert sum(float(v) for k, v in rows[0].items() if k != "index") == pytest.approx(1, abs=1e-4)
    # resume: the run continues in its own folder from its step
    run_here(capsys, "fit", "-c", config, "--ckpt_path", "last", "--trainer.max_epochs", "3")
    assert run_dirs(tmp_path, "default") == [folder]
    assert step_of(checkpoints / "last.ckpt") == 12
    # a metric it logs, named: best checkpoints again
    run_here(capsys, "fit", *PLAIN, *SMALL, "--checkpoint.monitor", "val_loss")
    newest = run_dirs(tmp_path, "default")[-1]
    assert len(list((newest / "checkpoints").glob("best*.ckpt"))) == 1


def test_a_model_without_validation_saves_last_only(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = workdir / "no_validation.py"
    module.write_text(
        "from tests.plain_module import LitClassifier\n\n\n"
        "class NoValidation(LitClassifier):\n"
        "    validation_step = None\n"
    )
    monkeypatch.syspath_prepend(str(workdir))
    model = ["--model", "no_validation.NoValidation", "--data", "MNIST1DDataModule"]
    _, err = run_here(capsys, "fit", *model, *SMALL, "--trainer.limit_val_batches", "0")
    assert "note: no best checkpoint by val/loss: the model does not validate" in err
    (folder,) = run_dirs(workdir, "default")
    assert [p.name for p in (folder / "checkpoints").iterdir()] == ["last.ckpt"]


def test_data_facts_reach_only_a_model_that_takes_them(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "takes_outputs.py").write_text(
        "from tests.plain_module import LitClassifier\n\n\n"
        "class TakesOutputs(LitClassifier):\n"
        "    def __init__(self, num_outputs: int, hidden: int = 8, lr: float = 0.01) -> None:\n"
        "        super().__init__(hidden, lr)\n"
        "        print('num_outputs', num_outputs)\n"
    )
    monkeypatch.syspath_prepend(str(workdir))
    model = ["--model", "takes_outputs.TakesOutputs", "--data", "MNIST1DDataModule"]
    out, _ = run_here(capsys, "fit", *model, *SMALL, "--trainer.max_epochs", "1")
    assert "num_outputs 10" in out


@pytest.mark.slow
def test_a_plain_module_fits_on_two_ddp_ranks_and_searches(tmp_path: Path) -> None:
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    run("fit", *PLAIN, *SMALL, *ddp, "--checkpoint.monitor", "val_loss", cwd=tmp_path)
    (folder,) = run_dirs(tmp_path, "default")
    assert step_of(folder / "checkpoints" / "last.ckpt") == 8  # 4 batches a rank, 2 epochs
    assert len(list((folder / "checkpoints").glob("best*.ckpt"))) == 1
    config = tmp_path / "plain.yaml"
    config.write_text(
        "model: {class_path: tests.plain_module.LitClassifier}\n"
        "data: {class_path: MNIST1DDataModule}\n"
        "checkpoint: {monitor: val_loss}\n"  # the search's objective: a metric it logs
    )
    space = tmp_path / "space.yaml"
    space.write_text("model.init_args.hidden: {type: int, low: 8, high: 32, step: 8}\n")
    searched = subprocess.run(
        [sys.executable, "-m", "project.search", "-c", config, "--space", space, "--trials", "2",
         "--pruner", "none", *SMALL],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert "Traceback" not in searched.stderr
    trials = sorted(tmp_path.glob("logs/**/trial-*/metrics.json"))
    assert len(trials) == 2 and all("val_loss" in json.loads(t.read_text()) for t in trials)


@pytest.mark.slow
def test_a_plain_module_takes_the_slurm_path(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a Slurm job's environment: its own run folder; requeued, it resumes there."""
    job = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}  # fmt: skip
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    run_here(capsys, "fit", *PLAIN, *SMALL)
    folder = workdir / "logs" / "default" / "slurm-77"
    assert step_of(folder / "checkpoints" / "last.ckpt") == 8
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    _, err = run_here(capsys, "fit", *PLAIN, *SMALL, "--trainer.max_epochs", "3")
    assert f"run folder: {Path('logs/default/slurm-77')} (requeued" in err
    assert step_of(folder / "checkpoints" / "last.ckpt") == 12
    assert [p.name for p in folder.parent.iterdir()] == ["slurm-77"]
