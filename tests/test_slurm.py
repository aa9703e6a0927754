"""The real sbatch files on a real Slurm cluster (`scripts/slurm/local_cluster.sh start` makes a
one-node one here): a 2-rank DDP job, a job array and its table, a preempted job that requeues and
resumes mid-epoch to the very weights of an uninterrupted job, and launch mistakes.

Without Slurm these tests skip, except under CI=true, where a missing cluster fails them.
All jobs are submitted at once by one fixture (they queue on the node's cores), which signals
the job to preempt while it runs; the tests then check what the jobs left.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from scripts.collect_metrics import table
from tests.callbacks import callback_flag, load_weights
from tests.conftest import CONFIGS, ROOT, SEQUENCE, service_missing

pytestmark = pytest.mark.slow

TRAIN = ROOT / "scripts" / "slurm" / "train.sbatch"
SWEEP = ROOT / "scripts" / "slurm" / "sweep.sbatch"
GRU = SEQUENCE / "gru.yaml"
DDP_CPU = CONFIGS / "trainer" / "ddp_cpu.yaml"
# 3500 samples, 250 per rank and batch: 7 steps per epoch, 14 in all
TINY = (
    "--model.init_args.hidden_size 16 --data.init_args.batch_size 250 --trainer.max_epochs 2 "
    "--trainer.enable_progress_bar false --trainer.enable_model_summary false"
).split()
SIGNAL_AT_STEP = 9  # in the second epoch
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
SWEEP_LINES = [
    "--model.init_args.hidden_size 8",
    "# comments and blank lines are skipped",
    "",
    "--model.init_args.hidden_size 12",
    "--optimizer.init_args.lr 0.003",
]


def cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (for a cluster here: scripts/slurm/local_cluster.sh start)"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    if nodes.returncode != 0 or not re.search(r"idle|mix|alloc", nodes.stdout):
        return f"no Slurm node is up (sinfo: {(nodes.stdout + nodes.stderr).strip()[:200]})"
    return None


def job_environment() -> dict[str, str]:
    """This environment for the jobs (sbatch exports it), less what earlier in-process runs set."""
    stale = ("PL_", "MASTER_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_", "TORCHELASTIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(stale)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's python
    env["PYTHONPATH"] = str(ROOT)  # tests.callbacks
    return env


def submit(options: list[str], script_and_args: list, cwd: Path) -> str:
    """Submits from the repository root (so the script finds configs/), running in `cwd`."""
    result = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={cwd}", *options, *map(str, script_and_args)],
        cwd=ROOT,
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job_records(job: str) -> list[dict[str, str]]:
    """`scontrol show job` of a job (of each element of an array), as key=value dicts."""
    result = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in result.stdout.splitlines()]


def where(job: "Job") -> tuple[Path, str]:
    """Another job in the same folder, logging as `job` does."""
    return job.folder, job.name


@dataclass
class Job:
    id: str
    folder: Path  # the job's working directory
    name: str  # the --job-name, which names its log
    seconds: float = 0.0  # from submission until every part ended

    def log(self) -> str:
        """This job's log (its array's: every task's), not those of other jobs in its folder."""
        files = self.folder.glob("logs/slurm-*.out")
        mine = [p for p in files if p.stem.endswith(f"-{self.id}") or f"-{self.id}_" in p.stem]
        return "\n".join(p.read_text() for p in sorted(mine))

    def states(self) -> set[str]:
        return {r["JobState"] for r in job_records(self.id)}


# Slurm holds a requeued job back for ~2 min so that the credential it revoked expires; a job
# released within the same second as its requeue is refused by slurmd ("Job credential revoked")
# and ends FAILED. A few seconds after the requeue the new credential is newer than the revocation.
RELEASE_AFTER = 3.0


def wait_until_done(jobs: list[Job], timeout: float, started: float) -> None:
    """Polls every job until it ended; releases requeued jobs held back by Slurm (~2 min)."""
    pending = list(jobs)
    held_since: dict[str, float] = {}
    while pending:
        assert time.monotonic() - started < timeout, (
            f"jobs still running: {[j.id for j in pending]}"
        )
        for job in list(pending):
            records = job_records(job.id)
            for record in records:
                if record["JobState"] == "PENDING" and record.get("Reason") == "BeginTime":
                    since = held_since.setdefault(record["JobId"], time.monotonic())
                    if time.monotonic() - since >= RELEASE_AFTER:
                        subprocess.run(
                            ["scontrol", "update", f"jobid={record['JobId']}", "StartTime=now"]
                        )
                        del held_since[record["JobId"]]
            if all(r["JobState"] in DONE for r in records):
                job.seconds = time.monotonic() - started
                pending.remove(job)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    problem = cluster_problem()
    if problem:
        service_missing(problem)

    def folder(name: str) -> Path:
        path = tmp_path_factory.mktemp(name)
        (path / "logs").mkdir()
        return path

    # the uninterrupted and the preempted job: identical but for the signal; both with 2 ranks
    # and 2 DataLoader workers each, slowed so the signal lands mid-epoch
    two_ranks = ["--ntasks-per-node=2", "--job-name=ddp"]
    jobs = {}
    for name in ("reference", "preempted"):
        path = folder(name)
        args = [GRU, "-c", DDP_CPU, *TINY, "--data.init_args.num_workers", "2"]
        args += callback_flag("SlowBatches", seconds=0.2, progress=str(path / "progress"))
        args += callback_flag("SaveWeights", folder=str(path / "weights"))
        jobs[name] = Job(submit(two_ranks, [TRAIN, *args], path), path, "ddp")

    path = folder("sweep")
    (path / "overrides.txt").write_text("\n".join(SWEEP_LINES) + "\n")
    quick = "--trainer.limit_train_batches 3 --trainer.limit_val_batches 1 --trainer.max_epochs 1"
    args = [GRU, path / "overrides.txt", *TINY, *quick.split()]
    jobs["sweep"] = Job(submit(["--array=1-3"], [SWEEP, *args], path), path, "sweep")

    # runs that must start fresh, or resume only because they are told to, once the jobs whose
    # runs and checkpoints they find have ended (--dependency)
    preempted, sweep = jobs["preempted"], jobs["sweep"]
    after = [f"--dependency=afterany:{preempted.id}"]
    args = [GRU, "-c", DDP_CPU, *TINY]  # the preempted job's config, in its folder
    again = submit([*two_ranks, *after], [TRAIN, *args], preempted.folder)
    jobs["again"] = Job(again, *where(preempted))
    after_sweep = [f"--dependency=afterany:{sweep.id}"]
    run_config = f"logs/gru/slurm-{sweep.id}_1/config.yaml"  # resubmitted as it is
    jobs["rerun"] = Job(submit(after_sweep, [TRAIN, run_config], sweep.folder), *where(sweep))
    resume = [f"logs/gru/slurm-{sweep.id}_2/config.yaml", "--ckpt_path", "last"]
    resume += ["--trainer.max_epochs", "2"]
    jobs["resume"] = Job(submit(after_sweep, [TRAIN, *resume], sweep.folder), *where(sweep))
    # a user's own srun line, beside a requeue checkpoint that another job left in its folder
    path = folder("own")
    leftover = preempted.folder / "logs" / "gru" / f"slurm-{preempted.id}" / "hpc_ckpt_1.ckpt"
    own = f"{sys.executable} -m project fit -c {GRU} -c {CONFIGS / 'trainer' / 'slurm.yaml'}"
    wrap = f"--wrap=cp {leftover} hpc_ckpt_1.ckpt && srun {own} {' '.join(TINY)} {quick}"
    options = ["--ntasks=1", "--job-name=own", "--output=logs/slurm-own-%j.out", *after]
    jobs["own"] = Job(submit([*options, wrap], [], path), path, "own")

    # launch mistakes: plain python in a 2-task job; 2 tasks per node but devices 1
    path = folder("no_srun")
    wrap = f"--wrap={sys.executable} -m project fit -c {GRU} -c {DDP_CPU}"
    options = ["--ntasks-per-node=2", "--job-name=nosrun", "--output=logs/slurm-nosrun-%j.out"]
    jobs["no_srun"] = Job(submit([*options, wrap], [], path), path, "nosrun")
    path = folder("devices")
    jobs["devices"] = Job(
        submit(two_ranks, [TRAIN, GRU, "--trainer.devices", "1"], path), path, "ddp"
    )

    started = time.monotonic()
    preempted = jobs["preempted"]
    progress = preempted.folder / "progress"
    while not (progress.exists() and int(progress.read_text() or 0) >= SIGNAL_AT_STEP):
        assert time.monotonic() - started < 240, f"job {preempted.id} never reached its step"
        assert not preempted.states() & DONE, f"job {preempted.id} ended:\n{preempted.log()}"
        time.sleep(0.1)
    # to every process of the job's steps (both ranks and their DataLoader workers), as Slurm's
    # own --signal=USR1@90 does
    subprocess.run(["scancel", "--signal=USR1", preempted.id], check=True)
    wait_until_done(list(jobs.values()), timeout=420, started=started)
    return jobs


def test_ddp_job_runs_on_two_ranks(jobs: dict[str, Job]) -> None:
    job = jobs["reference"]
    assert job.states() == {"COMPLETED"}, job.log()[-3000:]
    ranks = load_weights(job.folder / "weights")
    assert sorted(ranks) == [0, 1] and {r["world_size"] for r in ranks.values()} == {2}
    assert ranks[0]["pid"] != ranks[1]["pid"]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in job.log()
    run = job.folder / "logs" / "gru" / f"slurm-{job.id}"
    assert (run / "metrics.json").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert not list(run.glob("hpc_ckpt_*")), "an uninterrupted job needs no hpc checkpoint"
    print(f"DDP job {job.id}: {job.seconds:.0f} s from submission")


def test_preempted_job_resumes_mid_epoch_to_the_same_weights(jobs: dict[str, Job]) -> None:
    job, reference = jobs["preempted"], jobs["reference"]
    log = job.log()
    assert job.states() == {"COMPLETED"}, log[-3000:]
    assert job_records(job.id)[0]["Restarts"] == "1", log[-3000:]
    run = job.folder / "logs" / "gru" / f"slurm-{job.id}"
    # both starts logged into one file (--open-mode=append), into one run folder
    assert re.findall(r"=== .* restart (\d)", log) == ["0", "1"]
    (step,) = re.findall(r"Stopped on SIGUSR1 after step (\d+)", log)
    assert int(step) >= SIGNAL_AT_STEP
    assert (
        f"Restored all states from the checkpoint at logs/gru/slurm-{job.id}/hpc_ckpt_1.ckpt" in log
    )
    (hpc,) = run.glob("hpc_ckpt_*.ckpt")
    done = torch.load(hpc, weights_only=False)["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert 0 < done["current"]["processed"] < 7, f"not mid-epoch: {done}"

    resumed, whole = (
        load_weights(job.folder / "weights"),
        load_weights(reference.folder / "weights"),
    )
    assert sorted(resumed) == [0, 1]
    for rank in (0, 1):
        for key, value in whole[rank]["weights"].items():
            assert torch.equal(value, resumed[rank]["weights"][key]), f"rank {rank}: {key}"
    print(f"preempted job {job.id}: {job.seconds:.0f} s from submission, resumed from {hpc.name}")


def test_job_array_runs_every_line_into_one_table(jobs: dict[str, Job]) -> None:
    job = jobs["sweep"]
    assert job.states() == {"COMPLETED"}, job.log()[-3000:]
    runs = sorted((job.folder / "logs" / "gru").glob(f"slurm-{job.id}_*"))
    assert [r.name for r in runs] == [f"slurm-{job.id}_{i}" for i in (1, 2, 3)]
    header, rows = table(runs)
    assert len(rows) == 3 and "val/acc" in header
    sizes = [row[header.index("model.init_args.hidden_size")] for row in rows]
    rates = [row[header.index("optimizer.init_args.lr")] for row in rows]
    assert sizes == ["8", "12", "16"] and rates == ["0.01", "0.01", "0.003"]
    collected = subprocess.run(
        [sys.executable, ROOT / "scripts" / "collect_metrics.py", *runs],
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0 and len(collected.stdout.splitlines()) == 2 + 3
    print(f"job array {job.id}: {job.seconds:.0f} s from submission")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no_srun", "python was started without srun"),
        ("devices", "trainer.devices=1 but Slurm runs 2 task(s) per node"),
    ],
)
def test_launch_mistake_fails_the_job_in_one_line(
    jobs: dict[str, Job], name: str, expected: str
) -> None:
    job = jobs[name]
    # exit code 2 from the first rank; srun --kill-on-bad-exit may end the other one first
    assert job.states() == {"FAILED"} and job_records(job.id)[0]["ExitCode"] != "0:0"
    errors = [line for line in job.log().splitlines() if line.startswith("error: ")]
    assert errors and all(expected in line for line in errors), job.log()[-3000:]


def steps_of(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def announced_run(job: Job) -> tuple[str, str]:
    """The run folder the job's `python -m project` announced, and what it said of it."""
    ((folder, state),) = re.findall(r"^run folder: (\S+) \((.*)\)$", job.log(), re.MULTILINE)
    return folder, state


def test_a_new_job_with_the_same_config_starts_a_new_run(jobs: dict[str, Job]) -> None:
    """Same config, same folder, after a preempted job whose hpc checkpoint is still there."""
    job, preempted = jobs["again"], jobs["preempted"]
    assert job.states() == {"COMPLETED"}, job.log()[-3000:]
    assert announced_run(job) == (f"logs/gru/slurm-{job.id}", "a new run, from step 0")
    assert "Restored all states" not in job.log()
    run = job.folder / "logs" / "gru" / f"slurm-{job.id}"
    assert steps_of(run) == 14 and not list(run.glob("hpc_ckpt_*"))
    # the preempted run keeps what it had
    kept = preempted.folder / "logs" / "gru" / f"slurm-{preempted.id}" / "hpc_ckpt_1.ckpt"
    assert kept.exists()


def test_a_runs_config_resubmitted_lands_in_the_one_folder_it_announces(
    jobs: dict[str, Job],
) -> None:
    job, sweep = jobs["rerun"], jobs["sweep"]
    assert job.states() == {"COMPLETED"}, job.log()[-3000:]
    folder, state = announced_run(job)
    assert (folder, state) == (f"logs/gru/slurm-{job.id}", "a new run, from step 0")
    assert "Restored all states" not in job.log()
    run = job.folder / folder
    assert steps_of(run) == 3 and (run / "metrics.json").exists()
    # nothing anywhere else: no logs/config/…, no second folder for the job
    assert sorted(p.name for p in (job.folder / "logs").iterdir() if p.is_dir()) == ["gru"]
    assert [p.name for p in (job.folder / "logs" / "gru").glob(f"*{job.id}*")] == [run.name]
    # the source run is untouched: its config and its single epoch
    source = job.folder / "logs" / "gru" / f"slurm-{sweep.id}_1"
    assert steps_of(source) == 3


def test_an_explicit_resume_in_a_new_job_continues_the_run(jobs: dict[str, Job]) -> None:
    job, sweep = jobs["resume"], jobs["sweep"]
    assert job.states() == {"COMPLETED"}, job.log()[-3000:]
    run = f"logs/gru/slurm-{sweep.id}_2"
    assert f"Restored all states from the checkpoint at {run}/checkpoints/last.ckpt" in job.log()
    assert steps_of(job.folder / run) == 6  # one more epoch of 3 steps
    assert not list((job.folder / "logs" / "gru").glob(f"slurm-{job.id}*"))


def test_a_users_own_srun_ignores_a_leftover_hpc_checkpoint(jobs: dict[str, Job]) -> None:
    job = jobs["own"]
    assert job.states() == {"COMPLETED"}, job.log()[-3000:]
    assert announced_run(job) == (f"logs/gru/slurm-{job.id}", "a new run, from step 0")
    assert "Restored all states" not in job.log()
    assert (job.folder / "hpc_ckpt_1.ckpt").exists()  # left where it was, unused
    run = job.folder / "logs" / "gru" / f"slurm-{job.id}"
    assert steps_of(run) == 3
    assert not [p for p in job.folder.iterdir() if p.name not in ("logs", "hpc_ckpt_1.ckpt")]


def test_a_slurm_runs_summary_commands_work_off_the_cluster(jobs: dict[str, Job]) -> None:
    """The `test:` and `predict:` lines a Slurm run's summary prints, run as printed on a machine
    outside the job (no Slurm variables): the SLURMEnvironment plugin gives way."""
    job = jobs["reference"]
    log = job.log()
    for name in ("test", "predict"):
        (line,) = re.findall(rf"^{name}: +(python -m project .*)$", log, re.MULTILINE)
        command = line.split()
        command[0] = sys.executable
        result = subprocess.run(
            command, cwd=job.folder, env=job_environment(), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "note: not in a Slurm job: the SLURMEnvironment plugin is left out" in result.stderr
    run = job.folder / "logs" / "gru" / f"slurm-{job.id}"
    assert (run / "predictions.csv").exists()
    assert "test/acc" in (run / "metrics.json").read_text()


def test_a_local_run_beside_a_leftover_hpc_checkpoint_starts_fresh(tmp_path: Path) -> None:
    """Outside Slurm Lightning never looks for hpc checkpoints; nor does the template."""
    first = subprocess.run(
        [sys.executable, "-m", "project", "fit", "-c", GRU, *TINY, "--trainer.max_steps", "2"],
        cwd=tmp_path, env=job_environment(), capture_output=True, text=True,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "logs" / "gru" / "version_0"
    shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt")
    shutil.copy(run / "checkpoints" / "last.ckpt", run.parent / "hpc_ckpt_1.ckpt")
    second = subprocess.run(
        [sys.executable, "-m", "project", "fit", "-c", GRU, *TINY, "--trainer.max_steps", "3"],
        cwd=tmp_path, env=job_environment(), capture_output=True, text=True,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restored" not in second.stderr + second.stdout
    assert steps_of(tmp_path / "logs" / "gru" / "version_1") == 3
