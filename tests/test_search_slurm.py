"""A search as a Slurm job array on the real one-node cluster (scripts/slurm/local_cluster.sh):
2 workers, 6 trials, one worker preempted mid-trial (SIGUSR1, as Slurm's --signal sends), which
is requeued and continues that same trial from its checkpoint to the weights of an uninterrupted
run of the trial's config; the study ends with exactly 6 complete trials.

Without Slurm it skips, except under CI=true, where a missing cluster fails it.
"""

import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.callbacks import callback_flag
from tests.conftest import ROOT, service_missing
from tests.test_search import GRU, SMALL, last_weights, load, search, space_file
from tests.test_slurm import DONE, TRAIN, Job, cluster_problem, submit, wait_until_done

pytestmark = pytest.mark.slow

SEARCH = ROOT / "scripts" / "slurm" / "search.sbatch"
SIGNAL_AT_STEP = 2  # of 8 (2 epochs of 4 batches), each batch slowed to half a second


def running_trial_of(folder: Path, worker: str) -> optuna.trial.FrozenTrial | None:
    running = load(folder).get_trials(states=(TrialState.RUNNING,))
    return next((t for t in running if t.user_attrs.get("worker") == worker), None)


@pytest.fixture(scope="module")
def array(tmp_path_factory: pytest.TempPathFactory) -> tuple[Job, int]:
    """The array, run to its end; the number of the trial whose worker was preempted."""
    problem = cluster_problem()
    if problem:
        service_missing(problem)
    folder = tmp_path_factory.mktemp("slurm_search")
    (folder / "logs").mkdir()
    slow = callback_flag("SlowBatches", seconds=0.5, progress="progress")  # in the trial's run
    args = ["-c", GRU, "--space", space_file(folder), "--trials", 6, "--pruner", "none"]
    args += [*SMALL, *slow]
    prepared = search(folder, *args, "--prepare")
    assert prepared.returncode == 0, prepared.stderr
    options = ["--array=1-2", "--job-name=search"]
    job = Job(submit(options, [SEARCH, *args], folder), folder, "search")

    started = time.monotonic()
    while True:
        assert time.monotonic() - started < 300, f"no trial of task 1 got going:\n{job.log()}"
        assert not all(s in DONE for s in job.states()), f"the array ended:\n{job.log()}"
        trial = running_trial_of(folder, f"slurm-{job.id}_1")
        progress = folder / trial.user_attrs["run"] / "progress" if trial else None
        if progress and progress.exists() and int(progress.read_text() or 0) >= SIGNAL_AT_STEP:
            break
        time.sleep(0.1)
    # to the trial's job step, as `#SBATCH --signal=USR1@90` does before the time limit
    subprocess.run(["scancel", "--signal=USR1", f"{job.id}_1"], check=True)
    wait_until_done([job], timeout=600, started=started)
    return job, trial.number


def test_the_study_ends_with_exactly_the_trials_asked(array: tuple[Job, int]) -> None:
    job, _ = array
    trials = load(job.folder).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, [(t.number, t.state) for t in trials]
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    # a worker that asked at the moment the budget filled gives its trial back, unrun
    assert all(t.user_attrs.get("over_budget") for t in others), others
    assert len({t.user_attrs["run"] for t in complete}) == 6
    assert {t.user_attrs["worker"] for t in complete} == {f"slurm-{job.id}_1", f"slurm-{job.id}_2"}


def test_the_preempted_worker_continues_its_trial_to_an_uninterrupted_runs_weights(
    array: tuple[Job, int], tmp_path: Path
) -> None:
    job, number = array
    trial = load(job.folder).trials[number]
    assert trial.state == TrialState.COMPLETE
    log = job.log()
    assert "restart 1" in log and f"continuing trial {number}" in log, log
    run = job.folder / trial.user_attrs["run"]
    assert list(run.glob("hpc_ckpt_*.ckpt")), "the trial was not stopped by the signal"

    # the same trial uninterrupted: its config.yaml, as `fit -c` repeats it, in a fresh job
    folder = tmp_path / "reference"
    (folder / "logs").mkdir(parents=True)
    reference = Job(submit(["--job-name=reference"], [TRAIN, run / "config.yaml"], folder),
                    folder, "reference")  # fmt: skip
    wait_until_done([reference], timeout=300, started=time.monotonic())
    (again,) = folder.glob("logs/**/checkpoints/last.ckpt")
    assert reference.states() == {"COMPLETED"}, reference.log()
    expected, got = last_weights(again.parents[1]), last_weights(run)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
