"""The run-folder layout (project/runs.py): which folder a Slurm job's run takes, for job ids that
come back (the jobs on the real cluster, tests/test_slurm.py, never repeat an id, a reset cluster
does); `best`/`last`, the newest run, a checkpoint read once, and rank-0-only code that never
waits on a DDP broadcast."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

import project.checkpoints
import project.runs
from project.callbacks import RunResults
from project.checkpoints import CheckpointReads
from project.cli.summary import summary_lines
from project.errors import UserError
from project.runs import (
    main,
    named_checkpoint,
    newest_run,
    other_data_name,
    run_folder_on_rank_zero,
    run_of_checkpoint,
    slurm_run_folder,
)


@pytest.fixture
def in_job(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in {
        "SLURM_JOB_ID": "5",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    return monkeypatch


def used(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("{}\n")
    return folder


def test_a_job_takes_its_own_folder(tmp_path: Path, in_job: pytest.MonkeyPatch) -> None:
    assert slurm_run_folder(tmp_path) == tmp_path / "slurm-5"
    in_job.setenv("SLURM_ARRAY_JOB_ID", "7")
    in_job.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_run_folder(tmp_path) == tmp_path / "slurm-7_3"


def test_a_first_start_never_takes_a_used_folder(
    tmp_path: Path, in_job: pytest.MonkeyPatch
) -> None:
    used(tmp_path / "slurm-5")
    assert slurm_run_folder(tmp_path) == tmp_path / "slurm-5.1"
    used(tmp_path / "slurm-5.1")
    assert slurm_run_folder(tmp_path) == tmp_path / "slurm-5.2"


def test_a_requeued_job_takes_the_newest_folder_of_its_id(
    tmp_path: Path, in_job: pytest.MonkeyPatch
) -> None:
    in_job.setenv("SLURM_RESTART_COUNT", "1")
    used(tmp_path / "slurm-5")
    assert slurm_run_folder(tmp_path) == tmp_path / "slurm-5"
    used(tmp_path / "slurm-5.1")
    assert slurm_run_folder(tmp_path) == tmp_path / "slurm-5.1"


def test_outside_a_job_or_in_an_interactive_shell_there_is_none(
    tmp_path: Path, in_job: pytest.MonkeyPatch
) -> None:
    in_job.setenv("SLURM_JOB_NAME", "bash")  # Lightning's test for an interactive allocation
    assert slurm_run_folder(tmp_path) is None
    in_job.delenv("SLURM_NTASKS")
    in_job.delenv("SLURM_JOB_NAME")
    assert slurm_run_folder(tmp_path) is None


def test_a_checkpoint_belongs_to_the_run_that_holds_it(tmp_path: Path) -> None:
    run = used(tmp_path / "logs" / "gru" / "slurm-5")
    assert run_of_checkpoint(run / "checkpoints" / "last.ckpt") == run
    assert run_of_checkpoint(run / "hpc_ckpt_2.ckpt") == run
    assert run_of_checkpoint(tmp_path / "hpc_ckpt_2.ckpt") is None
    assert run_of_checkpoint(run / "elsewhere.ckpt") is None


def test_other_data_is_named_after_what_differs(tmp_path: Path) -> None:
    run = tmp_path
    (run / "config.yaml").write_text(
        "data:\n  class_path: project.data.SequenceFileDataModule\n  init_args:\n"
        "    train: data/train.npz\n    test: data/test.npz\n    batch_size: 100\n"
    )
    same = {
        "class_path": "project.data.SequenceFileDataModule",
        "init_args": {"train": "data/train.npz", "test": "data/test.npz", "batch_size": 7},
    }
    assert other_data_name(run, same) is None  # the batch size serves the data, it is no data
    other = {**same, "init_args": {**same["init_args"], "test": "new/other.npz"}}
    assert other_data_name(run, other) == "other"
    other["init_args"]["val_size"] = 0.2
    assert other_data_name(run, other) == "other_val_size=0.2"
    assert (
        other_data_name(run, {"class_path": "project.data.DigitsDataModule"}) == "DigitsDataModule"
    )


def test_the_newest_run_is_the_highest_version(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert newest_run(tmp_path) is None
    assert main(["newest", str(tmp_path)]) == 1  # `make resume` says there is nothing to resume
    for version in (2, 10, 9):
        (tmp_path / f"version_{version}").mkdir()
    (tmp_path / "version_x").mkdir()
    assert newest_run(tmp_path) == tmp_path / "version_10"
    assert main(["newest", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'version_10'}\n"


def test_best_and_last_name_files_of_the_run(tmp_path: Path) -> None:
    run = used(tmp_path / "version_0")
    with pytest.raises(UserError, match="holds no last.ckpt"):
        named_checkpoint(run, "last")
    with pytest.raises(UserError, match="holds no best"):
        named_checkpoint(run, "best")
    (run / "checkpoints").mkdir()
    for name in ("best-epoch=1-step=2.ckpt", "best-epoch=3-step=6.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).touch()
    assert named_checkpoint(run, "best").name == "best-epoch=3-step=6.ckpt"
    assert named_checkpoint(run, "last").name == "last.ckpt"


def test_a_checkpoint_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 7}, path)
    reads = []
    read = project.checkpoints.read_checkpoint
    monkeypatch.setattr(
        project.checkpoints, "read_checkpoint", lambda p: reads.append(p) or read(p)
    )
    checkpoints = CheckpointReads()
    assert checkpoints.check(path)["global_step"] == 7
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2))
    assert checkpoints.check(str(path), model)["global_step"] == 7  # the weights fit the model
    assert checkpoints.check("last") is None  # Lightning's keyword
    assert reads == [path]


class BroadcastingTrainer(Trainer):
    @property
    def log_dir(self) -> str | None:
        raise AssertionError("trainer.log_dir is a DDP broadcast: rank 0 alone would wait forever")


def test_rank_zero_code_never_asks_for_trainer_log_dir(tmp_path: Path) -> None:
    trainer = BroadcastingTrainer(
        logger=TensorBoardLogger(tmp_path, name="gru"),
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    run = run_folder_on_rank_zero(trainer)
    assert run == tmp_path / "gru" / "version_0"
    used(run)
    module = SimpleNamespace(metric_names=["loss", "acc"], headline="acc")
    metrics = RunResults()
    metrics.on_fit_start(trainer, module)
    metrics.on_fit_end(trainer, module)
    metrics.on_test_end(trainer, module)
    assert (run / "metrics.json").is_file() and (run / "hparams.yaml").is_file()
    assert f"run folder: {run}  (metrics.json, config.yaml, checkpoints/)" in summary_lines(
        trainer, 1.0, None
    )
