"""A process of a run killed from outside (SIGKILL, as the out-of-memory killer sends it): a DDP
rank under torchrun and under Slurm (srun), a DataLoader worker. The run ends within a minute,
not after the 30-minute collective timeout, with one `error:` line (exit code 1) that says what
died and how to resume; the launcher names the dead rank; `last.ckpt` is intact; and the
resumed run ends with bitwise the weights of a run never killed.

Each test is a row of docs/faults_distributed.md (run with `-s` to see the figures).
"""

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.callbacks import callback_flag, load_weights
from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli_process, service_missing
from tests.launchers import (
    children,
    clean_environment,
    finish,
    free_port,
    kill,
    torchrun_nodes,
    wait_for_step,
    watch,
)
from tests.test_slurm import TRAIN, Job, cluster_problem, job_records, submit, wait_until_done

pytestmark = pytest.mark.slow

# 3500 samples in batches of 250 per rank: 7 steps an epoch with 2 ranks, 14 in all. The epoch's
# end saves last.ckpt at step 7; the kill comes in the second epoch, which is then lost
DDP_RUN = [
    SEQUENCE / "gru.yaml", "-c", CONFIGS / "trainer" / "ddp_cpu.yaml",
    "--model.init_args.hidden_size", "16", "--data.init_args.batch_size", "250",
    "--trainer.max_epochs", "2", *QUIET,
]  # fmt: skip
# the same run on 2 torchrun nodes × 1 process: configs/trainer/multi_node.yaml, unchanged
NODES_RUN = [
    SEQUENCE / "gru.yaml", "-c", CONFIGS / "trainer" / "multi_node.yaml",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", *DDP_RUN[3:],
]  # fmt: skip
KILL_AT_STEP = 9
LOST = r"error: rank 0 of 2 lost another rank \(Connection (reset|closed) by peer\): a process of"


def slowed(folder: Path) -> list[str]:
    """0.2 s after each batch, so that a kill lands mid-epoch; each rank's pid noted."""
    progress = str(folder / "progress")
    return [*callback_flag("SlowBatches", seconds=0.2, progress=progress), *watch(folder / "pids")]


def saved_weights(folder: Path) -> list[str]:
    return callback_flag("SaveWeights", folder=str(folder / "weights"))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def last_step(run: Path) -> int:
    """The step of the run's last.ckpt, which must load (weights only) after the kill."""
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def assert_same_weights(resumed: dict[int, dict], whole: dict[int, dict]) -> None:
    assert sorted(resumed) == sorted(whole)
    for rank, saved in whole.items():
        for key, value in saved["weights"].items():
            assert torch.equal(value, resumed[rank]["weights"][key]), f"rank {rank}: {key}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """The weights of both ranks of the DDP run, never killed (torchrun, 2 processes)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    agents = torchrun_nodes([*DDP_RUN, *saved_weights(folder)], folder, 1, 2, free_port())
    assert finish(agents, 300) == [0], (folder / "node0.log").read_text()[-3000:]
    return load_weights(folder / "weights")


def test_a_killed_rank_ends_the_torchrun_run_within_a_minute(
    workdir: Path, uninterrupted: dict[int, dict]
) -> None:
    args = [*DDP_RUN, *slowed(workdir), *saved_weights(workdir)]
    agents = torchrun_nodes(args, workdir, 1, 2, free_port())
    killed = kill(wait_for_step(workdir / "pids", 1, KILL_AT_STEP, agents))
    (code,) = finish(agents, 120)
    seconds = time.monotonic() - killed
    log = (workdir / "node0.log").read_text()
    assert code != 0 and seconds < 60, log[-3000:]
    # torchrun's report: the killed rank is the root cause
    root = log.split("Root Cause (first observed failure):")[1]
    assert re.search(r"rank +: 1 \(local_rank: 1\)\s+exitcode +: -9 .*\(SIGKILL\)", root), root
    # the surviving rank: one line, no traceback (the only one is torchrun's own report)
    (line,) = error_lines(log)
    assert re.match(LOST, line), line
    resume = "python -m project fit -c logs/gru/version_0/config.yaml --ckpt_path last"
    assert line.endswith(f"; resume: {resume}") and log.count("Traceback") == 1
    run = workdir / "logs" / "gru" / "version_0"
    assert last_step(run) == 7

    # the command it names, under torchrun again: the rest of the run, to the same weights
    config = resume.split()[5]
    again = torchrun_nodes([config, "--ckpt_path", "last"], workdir, 1, 2, free_port(), "again")
    assert finish(again, 300) == [0], (workdir / "again0.log").read_text()[-3000:]
    assert_same_weights(load_weights(workdir / "weights"), uninterrupted)
    print(f"torchrun: exit {code} {seconds:.1f} s after the kill; {line}")


def test_a_killed_rank_on_the_second_node_ends_both_torchrun_agents_within_a_minute(
    workdir: Path,
) -> None:
    """Rank 1, the process of node 1, killed: both nodes' agents and rank 0 end; node 1's agent
    names the dead rank, rank 0 says it lost a rank, and the resumed run ends on the weights of
    a 2-node run never killed."""
    whole = workdir / "whole"
    whole.mkdir()
    agents = torchrun_nodes([*NODES_RUN, *saved_weights(whole)], whole, 2, 1, free_port())
    assert finish(agents, 300) == [0, 0], (whole / "node0.log").read_text()[-3000:]

    agents = torchrun_nodes([*NODES_RUN, *slowed(workdir), *saved_weights(workdir)], workdir, 2,
                            1, free_port())  # fmt: skip
    killed = kill(wait_for_step(workdir / "pids", 1, KILL_AT_STEP, agents))
    codes = finish(agents, 120)
    seconds = time.monotonic() - killed
    logs = [(workdir / f"node{node}.log").read_text() for node in (0, 1)]
    assert 0 not in codes and seconds < 60, logs[0][-2000:] + logs[1][-2000:]
    # node 1's agent: the killed rank is the root cause (its only process: local rank 0)
    root = logs[1].split("Root Cause (first observed failure):")[1]
    assert re.search(r"rank +: 1 \(local_rank: 0\)\s+exitcode +: -9 .*\(SIGKILL\)", root), root
    (line,) = error_lines(logs[0]) + error_lines(logs[1])
    assert re.match(LOST, line), line
    resume = "python -m project fit -c logs/gru/version_0/config.yaml --ckpt_path last"
    assert line.endswith(f"; resume: {resume}")
    run = workdir / "logs" / "gru" / "version_0"
    assert last_step(run) == 7

    again = torchrun_nodes([resume.split()[5], "--ckpt_path", "last"], workdir, 2, 1,
                           free_port(), "again")  # fmt: skip
    assert finish(again, 300) == [0, 0], (workdir / "again0.log").read_text()[-3000:]
    assert_same_weights(load_weights(workdir / "weights"), load_weights(whole / "weights"))
    print(f"2 torchrun nodes: exits {codes} {seconds:.1f} s after the kill; {line}")


def test_a_killed_rank_fails_the_slurm_job_within_a_minute_and_a_requeue_resumes_it(
    tmp_path: Path, uninterrupted: dict[int, dict]
) -> None:
    problem = cluster_problem()
    if problem:
        service_missing(problem)
    (tmp_path / "logs").mkdir()
    args = [TRAIN, *DDP_RUN, *slowed(tmp_path), *saved_weights(tmp_path)]
    job = Job(submit(["--ntasks-per-node=2", "--job-name=ddp"], args, tmp_path), tmp_path, "ddp")
    killed = kill(wait_for_step(tmp_path / "pids", 1, KILL_AT_STEP, []))
    while job.states() & {"RUNNING", "COMPLETING"}:
        assert time.monotonic() - killed < 60, f"job {job.id} still running"
        time.sleep(0.2)
    seconds = time.monotonic() - killed
    log = job.log()
    assert job.states() == {"FAILED"}, log[-3000:]
    # the batch script's (no accounting here for sacct: scontrol's record of the job)
    exit_code = job_records(job.id)[0]["ExitCode"]
    assert exit_code != "0:0", exit_code
    assert "srun: error: localhost: task 1: Killed" in log  # Slurm names the dead rank
    lines = error_lines(log)
    assert len(lines) == 1 and re.match(LOST, lines[0]), log[-3000:]
    assert lines[0].endswith(f"; resume: scontrol requeue {job.id}")
    assert "Traceback" not in log
    run = tmp_path / "logs" / "gru" / f"slurm-{job.id}"
    assert last_step(run) == 7

    # the requeued job (same id, same run folder) continues from last.ckpt
    subprocess.run(["scontrol", "requeue", job.id], check=True, timeout=20)
    wait_until_done([job], timeout=300, started=time.monotonic())
    log = job.log()
    assert job.states() == {"COMPLETED"}, log[-3000:]
    assert job_records(job.id)[0]["Restarts"] == "1"
    resumed_from = f"logs/gru/slurm-{job.id}/checkpoints/last.ckpt"
    assert f"requeued (restart 1), resuming from {resumed_from}" in log
    assert_same_weights(load_weights(tmp_path / "weights"), uninterrupted)
    print(f"slurm: job FAILED (ExitCode {exit_code}) {seconds:.1f} s after the kill; {lines[0]}")


def test_a_killed_dataloader_worker_is_one_line_and_the_run_resumes(workdir: Path) -> None:
    # one process, batches of 500 (7 steps an epoch), 2 workers; resumed from the end-of-epoch
    # last.ckpt (step 7), which with workers used to shuffle the next epoch like the one before
    run = ["-c", SEQUENCE / "gru.yaml", *DDP_RUN[3:], "--data.init_args.batch_size", "500"]
    run += ["--data.init_args.num_workers", "2"]
    whole = cli_process("fit", *run, *callback_flag("SaveWeights", folder="whole"), cwd=workdir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    shutil.rmtree(workdir / "logs")

    command = [sys.executable, "-m", "project", "fit", *map(str, run), *slowed(workdir)]
    command += saved_weights(workdir)
    output = (workdir / "output.log").open("w")
    env = clean_environment()
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=output, stderr=output)
    pid = wait_for_step(workdir / "pids", 0, KILL_AT_STEP, [process])
    workers = children(pid)
    # the training and the validation loaders' (persistent) workers: torch notices any death
    assert len(workers) == 4, workers
    killed = kill(workers[0])
    (code,) = finish([process], 60)
    seconds = time.monotonic() - killed
    log = (workdir / "output.log").read_text()
    assert code == 1 and seconds < 30, log[-3000:]
    (line,) = error_lines(log)
    assert line.startswith(f"error: DataLoader worker (pid {workers[0]}) is killed by signal: ")
    resume = "python -m project fit -c logs/gru/version_0/config.yaml --ckpt_path last"
    assert line.endswith(f"; resume: {resume}") and "Traceback" not in log
    assert last_step(workdir / "logs" / "gru" / "version_0") == 7

    resumed = subprocess.run(
        [sys.executable, *shlex.split(resume)[1:]], cwd=workdir, env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(load_weights(workdir / "weights"), load_weights(workdir / "whole"))
    print(f"worker: exit {code} {seconds:.1f} s after the kill; {line}")
