"""Hyperparameter search with Optuna over an experiment's config (`make search EXP=gru`):

    python -m project.search -c configs/gru.yaml --space configs/search/gru.yaml --trials 30 \
        --jobs 2

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
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from project.errors import UserError
from project.launch_checks import usable_cores
from project.runs import latest_checkpoint, slurm_job
from project.search_report import write_report
from project.search_space import example_value, flags, read_space
from project.trial import ENV, RESULT, make_storage

ROOT = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_PLAY = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)


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
    parser.add_argument("--report", action="store_true", help="only write the study's report")
    parser.add_argument(
        "--prepare", action="store_true", help="check and create the study, run no trial "
        "(before submitting scripts/slurm/search.sbatch)",
    )  # fmt: skip
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a worker's index
    return parser.parse_known_args(argv)


class Search:
    """One study: where it lives, what a trial runs, and how trials are asked and told."""

    def __init__(self, args: argparse.Namespace, fit_flags: list[str]) -> None:
        self.args, self.fit_flags = args, fit_flags
        self.configs = [Path(c) for c in args.config]
        self.experiment = self.configs[0].stem
        self.name = args.study or args.space.stem
        self.folder = Path("logs") / self.experiment / "search" / self.name
        self.storage_url = args.storage or str(self.folder / "journal.log")

    def check(self) -> tuple[dict, str, str]:
        """The space, and the objective's metric and direction, checked before anything is
        written: every key with a value it can take goes through the CLI's own parser."""
        if self.args.trials <= 0:
            raise UserError(f"--trials must be > 0, got {self.args.trials}")
        if self.args.jobs <= 0:
            raise UserError(f"--jobs must be > 0, got {self.args.jobs}")
        self.pruner_settings()
        space = read_space(self.args.space)
        examples = flags({key: example_value(dist) for key, dist in space.items()})
        command = [*self.fit_command(), *examples, "--print_config"]
        printed = subprocess.run(command, capture_output=True, text=True, env=child_env())
        if printed.returncode != 0:
            lines = printed.stderr.strip().splitlines() or ["(no message)"]
            raise UserError(f"search space {self.args.space}: {lines[-1].removeprefix('error: ')}")
        checkpoint = yaml.safe_load(printed.stdout).get("checkpoint") or {}
        monitor, mode = checkpoint.get("monitor"), checkpoint.get("mode", "min")
        if not monitor:
            raise UserError("the config's checkpoint has no monitor: the search has no objective")
        return space, monitor, "minimize" if mode == "min" else "maximize"

    def fit_command(self) -> list[str]:
        words = [sys.executable, "-m", "project", "fit"]
        for config in self.configs:
            words += ["-c", str(config)]
        if slurm_job() is not None:  # checkpoint and requeue on Slurm's signal, as train.sbatch
            words += ["-c", str(ROOT / "configs" / "trainer" / "slurm.yaml")]
        return words + self.fit_flags

    def study(self, direction: str | None = None, worker: int = 0) -> optuna.Study:
        if "://" not in self.storage_url:
            Path(self.storage_url).parent.mkdir(parents=True, exist_ok=True)
        try:
            storage = make_storage(self.storage_url)
            # the pruner acts in the trials' processes (project/trial.py), not here
            sampler = optuna.samplers.TPESampler(seed=self.args.seed + worker)
            if direction is None:
                return optuna.load_study(study_name=self.name, storage=storage, sampler=sampler)
            return optuna.create_study(
                study_name=self.name,
                storage=storage,
                sampler=sampler,
                direction=direction,
                load_if_exists=True,
            )
        except (UserError, KeyError, ValueError):
            raise
        except Exception as error:  # noqa: BLE001 (a database's own errors: many types)
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise UserError(f"storage {self.storage_url} unreachable: {first}") from None

    def pruner_settings(self) -> dict[str, Any]:
        a = self.args
        if a.pruner == "threshold" and a.pruner_threshold is None:
            raise UserError("--pruner threshold needs --pruner_threshold")
        return {
            "pruner": a.pruner,
            "startup_trials": a.pruner_startup_trials,
            "warmup_epochs": a.pruner_warmup_epochs,
            "threshold": a.pruner_threshold,
        }

    # --- a worker ---------------------------------------------------------------------------

    def work(self, index: int) -> None:
        study = self.study(worker=index)
        space = read_space(self.args.space)
        me = worker_name(index)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker") == me:  # this Slurm task, requeued mid-trial
                print(f"worker {me}: continuing trial {trial.number}", flush=True)
                if self.run(study, trial.number, trial.params, Path(trial.user_attrs["run"])):
                    return
        while True:
            self.fail_stale(study)
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state in FINISHED]
            in_play = [t for t in trials if t.state in IN_PLAY]
            if len(finished) >= self.args.trials:
                return
            if len(in_play) >= self.args.trials:  # the rest are running elsewhere: wait for them
                time.sleep(min(self.args.heartbeat, 5.0))
                continue
            trial = ask_within_budget(study, space, self.args.trials)
            if trial is None:
                continue
            retry_of = trial.user_attrs.get("retry_of")
            run = (
                Path(study.trials[retry_of].user_attrs["run"])
                if retry_of is not None
                else self.folder / f"trial-{trial.number:04d}"
            )
            if self.run(study, trial.number, trial.params, run):
                return

    def run(self, study: optuna.Study, number: int, params: dict[str, Any], run: Path) -> bool:
        """Runs (or continues) a trial to its end and tells the study; True when the process
        was interrupted (Slurm requeues this worker, which will continue the trial)."""
        storage = make_storage(self.storage_url)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.name), number
        )
        me = worker_name(self.args.worker or 0)
        for key, value in (("worker", me), ("run", str(run)), ("heartbeat", time.time())):
            storage.set_trial_user_attr(trial_id, key, value)
        (run / RESULT).unlink(missing_ok=True)
        checkpoint = latest_checkpoint(run) if run.is_dir() else None
        command = [
            *self.fit_command(),
            *flags(params),
            *("--experiment", str(run.parent.relative_to("logs"))),
            *("--trainer.logger.init_args.version", run.name),
            *("--trainer.default_root_dir", str(run)),
            *(["--ckpt_path", str(checkpoint)] if checkpoint else []),
        ]
        if slurm_job() is not None:  # every rank a task of this job's step
            tasks = os.environ.get("SLURM_NTASKS", "1")
            command = ["srun", f"--ntasks={tasks}", "--kill-on-bad-exit=1", *command]
        settings = {"storage": self.storage_url, "study": self.name, "number": number}
        settings |= self.pruner_settings()
        env = child_env() | {ENV: json.dumps(settings)}
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / f"trial-{number:04d}.out"
        what = f"continuing from {checkpoint}" if checkpoint else "new"
        print(f"trial {number} ({what}): {json.dumps(params)} -> {run}", flush=True)
        stop = threading.Event()
        beat = threading.Thread(
            target=heartbeat, args=(storage, trial_id, self.args.heartbeat, stop)
        )
        beat.start()
        try:
            with log.open("a") as out:
                code = subprocess.run(
                    command, stdout=out, stderr=subprocess.STDOUT, env=env
                ).returncode
        finally:
            stop.set()
            beat.join()
        result = json.loads((run / RESULT).read_text()) if (run / RESULT).exists() else None
        if result is None and code == 0:  # saved and stopped on a signal: to be continued
            print(f"trial {number} interrupted: it continues when this worker does", flush=True)
            return True
        if result is None or (result["value"] is None and not result["pruned"]):
            storage.set_trial_user_attr(trial_id, "error", tail(log))
            study.tell(number, state=TrialState.FAIL)
            print(f"trial {number} failed (exit {code}): see {log}", flush=True)
        elif result["pruned"]:
            study.tell(number, state=TrialState.PRUNED)
            print(f"trial {number} pruned after epoch {result['epochs']}", flush=True)
        else:
            storage.set_trial_user_attr(trial_id, "epochs", result["epochs"])
            study.tell(number, result["value"])
            print(f"trial {number}: {result['value']:.6g}", flush=True)
        return False

    def fail_stale(self, study: optuna.Study) -> None:
        """Running trials whose worker stopped beating (killed, node lost): failed, and the
        same values enqueued again, to continue from the trial's last checkpoint."""
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.user_attrs.get("heartbeat", trial.datetime_start.timestamp())
            if now - beat < self.args.stale_after:
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):  # another worker failed it first
                continue
            retry_of = trial.user_attrs.get("retry_of", trial.number)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": retry_of})
            print(f"trial {trial.number} stale (no heartbeat for {now - beat:.0f} s): retried",
                  flush=True)  # fmt: skip


def ask_within_budget(
    study: optuna.Study, space: dict[str, Any], budget: int
) -> optuna.Trial | None:
    """A new trial (an enqueued retry first, with its own values), or None when trials asked
    before it already fill the budget: another worker asked at the same moment. That trial is
    given back unrun, failed and marked `over_budget`, so the study never runs more than asked."""
    trial = study.ask(space)
    ahead = [t for t in study.get_trials(deepcopy=False, states=IN_PLAY)
             if t.number < trial.number]  # fmt: skip
    if len(ahead) < budget:
        return trial
    trial.set_user_attr("over_budget", True)
    study.tell(trial, state=TrialState.FAIL)
    return None


def heartbeat(
    storage: optuna.storages.BaseStorage, trial_id: int, every: float, stop: threading.Event
) -> None:
    while not stop.wait(every):
        try:
            storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except Exception:  # noqa: BLE001 (told or failed meanwhile: nothing left to beat for)
            return


def worker_name(index: int) -> str:
    """Who runs a trial: the Slurm task (the same after a requeue), or this host and process."""
    job = slurm_job()
    return f"slurm-{job}" if job else f"{os.uname().nodename}-{os.getpid()}-{index}"


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def threads_per_worker(jobs: int) -> dict[str, str]:
    """The cores shared out between local workers: torch's default (a thread per core in every
    process) oversubscribes them, and spinning OpenMP threads then collapse (docs/benchmarks.md)."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, usable_cores() // jobs))}


def tail(path: Path, lines: int = 5) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def main(argv: list[str] | None = None) -> None:
    args, fit_flags = parse(sys.argv[1:] if argv is None else argv)
    search = Search(args, fit_flags)
    try:
        if args.report:
            write_report(search.study(), search.folder)
            return
        if args.worker is not None:
            search.work(args.worker)
            return
        _, monitor, direction = search.check()
        study = search.study(direction)
        for key, value in (
            ("monitor", monitor),
            ("configs", args.config),
            ("space", str(args.space)),
        ):
            study.set_user_attr(key, value)
        print(f"study {search.name}: {direction} {monitor}, {args.trials} trials, storage "
              f"{search.storage_url}", flush=True)  # fmt: skip
        if args.prepare:
            return
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "project.search",
                    *(argv or sys.argv[1:]),
                    "--worker",
                    str(k),
                ],
                env=child_env() | threads_per_worker(args.jobs),
            )  # fmt: skip
            for k in range(args.jobs)
        ]
        codes = [worker.wait() for worker in workers]
        if any(codes):
            raise UserError(f"a worker failed (exit codes {codes})")
        write_report(search.study(), search.folder)
    except UserError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
