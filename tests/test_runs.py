"""Which folder a Slurm job's run takes (project/runs.py), for job ids that come back: the jobs
on the real cluster (tests/test_slurm.py) never repeat an id, a reset cluster does."""

from pathlib import Path

import pytest

from project.runs import other_data_name, run_of_checkpoint, slurm_run_folder


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
