"""Hyperparameter search with Optuna over an experiment's config (`make search EXP=gru`):

    python -m project.search -c configs/sequence/gru.yaml --space configs/search/gru.yaml \
        --trials 30 --jobs 2

Each trial is an ordinary `python -m project fit` of the config plus the trial's values, in its
own run folder `logs/<exp>/search/<study>/trial-NNNN/` (config.yaml, curves, a row in
TensorBoard's HParams tab, metrics.json). The objective is the checkpoint callback's monitored
metric at its best epoch, in its mode; a pruner stops poor trials after a validation. Workers
(`--jobs` local processes, or the tasks of a Slurm array: scripts/slurm/search.sbatch) pull
trials from one study until `--trials` trials have finished (complete or pruned): the study
lives in an Optuna journal file beside the trials (no server; a shared filesystem is fine) or
in any Optuna storage URL (`--storage postgresql://...`).

A worker requeued by Slurm continues its own trial from the trial's checkpoint, as the same
trial. A worker killed outright leaves its trial without heartbeats: after `--stale_after`
seconds another worker (or a rerun of the command) fails it and runs it again, with the same
values, from its last checkpoint. Rerunning the command resumes the study until the budget is met.

This module is the command line; the study is project/search/study.py, a worker
project/search/worker.py.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from project.errors import UserError, chain_of
from project.files import EXIT_CODE, disk_error_line, is_disk_error, naming
from project.launch_checks import usable_cores
from project.search.report import write_report
from project.search.study import Search, child_env
from project.search.worker import SearchWorker, TrialStruck
from project.study_storage import storage_errors


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m project.search",
        allow_abbrev=False,  # a trial's flag must never be taken for a prefix of ours
        description="An Optuna study over an experiment; flags it does not know go to every "
        "trial's `fit` (e.g. --trainer.max_epochs 10).",
    )
    parser.add_argument(
        "-c", "--config", action="append", required=True, help="experiment config(s)"
    )
    parser.add_argument("--space", required=True, type=Path, help="search space YAML")
    parser.add_argument("--trials", type=int, default=20, help="finished trials to reach")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--study", help="study name (default: the space file's name)")
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: a journal file in the study's folder)"
    )
    parser.add_argument(
        "--pruner",
        default="median",
        choices=["median", "hyperband", "successive_halving", "threshold", "none"],
    )
    parser.add_argument("--pruner_startup_trials", type=int, default=5)
    parser.add_argument("--pruner_warmup_epochs", type=int, default=1)
    parser.add_argument(
        "--pruner_threshold", type=float, help="threshold pruner: stop trials worse than this"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (worker k: seed + k)")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats")
    parser.add_argument(
        "--stale_after", type=float, default=600.0, help="a running trial without heartbeat "
        "this long is failed and run again (longer than a Slurm requeue takes)",
    )  # fmt: skip
    parser.add_argument(
        "--max_failures", type=int, default=3, help="a worker stops, with the first failure's "
        "error, after this many failed trials in a row (a broken model fails them all)",
    )  # fmt: skip
    parser.add_argument(
        "--max_retries", type=int, default=2, help="a stale trial (its worker killed) is run "
        "again at most this many times",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="only write the study's report")
    parser.add_argument(
        "--prepare", action="store_true", help="check and create the study, run no trial "
        "(before submitting scripts/slurm/search.sbatch)",
    )  # fmt: skip
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a worker's index
    return parser.parse_known_args(argv)


def threads_per_worker(jobs: int) -> dict[str, str]:
    """The cores shared out between local workers: torch's default (a thread per core in every
    process) oversubscribes them, and spinning OpenMP threads then collapse (docs/benchmarks.md)."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, usable_cores() // jobs))}


def search_with_workers(search: Search, args: argparse.Namespace, argv: list[str]) -> None:
    """Prepares the study, then runs `--jobs` workers (this command with `--worker K`) to its
    end and writes the report; exits with a failed worker's code where each said why."""
    _, monitor, direction = search.check()
    study = search.study(direction)
    for key, value in (("monitor", monitor), ("configs", args.config), ("space", str(args.space))):
        study.set_user_attr(key, value)
    print(f"study {search.name}: {direction} {monitor}, {args.trials} trials, storage "
          f"{search.storage_url}", flush=True)  # fmt: skip
    if args.prepare:
        return
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "project.search", *argv, "--worker", str(k)],
            env=child_env() | threads_per_worker(args.jobs),
        )
        for k in range(args.jobs)
    ]
    codes = [worker.wait() for worker in workers]
    if any(codes):
        if all(code in (0, 2, EXIT_CODE) for code in codes):
            sys.exit(max(codes))  # each failed worker said why, in one `error:` line
        raise UserError(f"a worker failed (exit codes {codes})")
    write_report(search.study(), search.folder)


def main(argv: list[str] | None = None) -> None:
    args, fit_flags = parse(sys.argv[1:] if argv is None else argv)
    search = Search(args, fit_flags)
    try:
        if args.report:
            write_report(search.study(), search.folder)
            return
        if args.worker is not None:
            SearchWorker(args, fit_flags).work(args.worker)
            return
        search_with_workers(search, args, argv or sys.argv[1:])
    except UserError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
    except storage_errors() as error:  # the database's server is gone, for longer than PATIENCE
        root = [e for e in chain_of(error) if e.__cause__ is None and e.__context__ is None][-1:]
        first = (str(root[0]) if root else str(error)).strip().splitlines()[:1] or [repr(error)]
        print(f"error: storage {search.shown_storage()} unreachable: {first[0]} (rerun the same "
              "command to continue the study)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    except TrialStruck as error:  # a trial's disk fault (its reporter's journal, its run's)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_CODE)
    except OSError as error:  # a full, read-only or refused disk: the journal's, most likely
        if not is_disk_error(error):
            raise
        if "://" not in search.storage_url:  # Optuna's journal writes name no file
            naming(error, search.storage_url)
        print(f"error: {disk_error_line(error)}; the search stopped: rerun the same command "
              "once it is fixed, to continue the study", file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_CODE)
