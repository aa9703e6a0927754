"""A search's worker (`python -m project.search ... --worker K`): pulls trials from the study
until the budget is met, runs each as a `python -m project fit` and tells the study its result;
continues its own trial after a Slurm requeue, and retries trials whose worker stopped beating."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from project.callbacks.trial_reporter import RESULT
from project.errors import UserError
from project.files import EXIT_CODE
from project.runs import latest_checkpoint, slurm_job
from project.search.space import flags, read_space
from project.search.study import FINISHED, IN_PLAY, Search, child_env
from project.study_storage import make_storage, patiently


class SearchWorker(Search):
    """The study's trials, asked, run and told by one worker process."""

    def work(self, index: int) -> None:
        study = self.study(worker=index)
        space = read_space(self.args.space)
        me = worker_name(index)
        self.failed: list[tuple[int, Path]] = []  # this worker's failed trials in a row, and logs
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
            waiting = any(t.state == TrialState.WAITING for t in in_play)  # a retry: ask for it
            if len(in_play) >= self.args.trials and not waiting:  # the rest run elsewhere: wait
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
        trial_id = patiently(lambda: storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.name), number
        ))  # fmt: skip
        me = worker_name(self.args.worker or 0)
        for key, value in (("worker", me), ("run", str(run)), ("heartbeat", time.time())):
            patiently(lambda k=key, v=value: storage.set_trial_user_attr(trial_id, k, v))
        (run / RESULT).unlink(missing_ok=True)
        checkpoint = latest_checkpoint(run) if run.is_dir() else None
        command = self.trial_command(number, params, run, checkpoint)
        env = child_env()
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / f"trial-{number:04d}.out"
        what = f"continuing from {checkpoint}" if checkpoint else "new"
        print(f"trial {number} ({what}): {json.dumps(params)} -> {run}", flush=True)
        stop, faults = threading.Event(), []
        with log.open("a") as out, subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env
        ) as process:  # fmt: skip
            beat = threading.Thread(
                target=heartbeat,
                args=(storage, trial_id, self.args.heartbeat, stop, process, faults),
            )
            beat.start()
            try:
                code = process.wait()
            except BaseException:  # as subprocess.run: Ctrl-C or a kill ends the trial too
                process.kill()
                raise
            finally:
                stop.set()
                beat.join()
        if faults:  # the journal refused a heartbeat: the trial was stopped, the search ends
            raise faults[0]
        result = json.loads((run / RESULT).read_text()) if (run / RESULT).exists() else None
        if result is None and code == EXIT_CODE:
            # a full, read-only or refused disk (the journal's, from the trial's reporter, or
            # the run's): the machine's fault, not the trial's; every next trial would meet it.
            # Nothing is told: the trial stays running in the study, and a rerun runs it again
            raise TrialStruck(
                f"trial {number} stopped on a disk fault: {error_line(log)} (log: {log}); the "
                "search stopped: rerun the same command once it is fixed, to continue the study"
            )
        # told patiently: a trial that ran must not be lost to a database restarting meanwhile
        patiently(lambda: self.tell(study, storage, trial_id, number, result, code, log))
        return result is None and code == 0

    def trial_command(
        self, number: int, params: dict[str, Any], run: Path, checkpoint: Path | None
    ) -> list[str]:
        """`python -m project fit` for a trial: its parameters, its run folder, the checkpoint it
        continues from, and its reporter; under Slurm, every rank a task of this job's step."""
        command = [
            *self.fit_command(),
            *flags(params),
            *("--experiment", str(run.parent.relative_to("logs"))),
            *("--trainer.logger.init_args.version", run.name),
            *("--trainer.default_root_dir", str(run)),
            *(["--ckpt_path", str(checkpoint)] if checkpoint else []),
        ]
        settings = {"storage": self.storage_url, "study": self.name, "number": number}
        settings |= self.pruner_settings()
        reporter = {"class_path": "project.callbacks.TrialReporter", "init_args": settings}
        command += ["--run_callbacks+", json.dumps(reporter)]
        if slurm_job() is not None:
            tasks = os.environ.get("SLURM_NTASKS", "1")
            command = ["srun", f"--ntasks={tasks}", "--kill-on-bad-exit=1", *command]
        return command

    def tell(self, study: optuna.Study, storage: optuna.storages.BaseStorage, trial_id: int,
             number: int, result: dict | None, code: int, log: Path) -> None:  # fmt: skip
        """Tells the study how the trial ended (an interrupted one: nothing, it goes on)."""
        if result is None and code == 0:  # saved and stopped on a signal: to be continued
            print(f"trial {number} interrupted: it continues when this worker does", flush=True)
            return
        if result is None or (result["value"] is None and not result["pruned"]):
            if study.trials[number].state == TrialState.RUNNING:  # else: told before a retry
                storage.set_trial_user_attr(trial_id, "error", tail(log))
                study.tell(number, state=TrialState.FAIL)
            print(f"trial {number} failed (exit {code}): see {log}", flush=True)
            self.give_up_after_failure(number, log)
            return
        self.failed = []
        if result["pruned"]:
            study.tell(number, state=TrialState.PRUNED)
            print(f"trial {number} pruned after epoch {result['epochs']}", flush=True)
        else:
            storage.set_trial_user_attr(trial_id, "epochs", result["epochs"])
            study.tell(number, result["value"])
            print(f"trial {number}: {result['value']:.6g}", flush=True)

    def give_up_after_failure(self, number: int, log: Path) -> None:
        """Stops this worker after `--max_failures` failed trials in a row: a model or a setting
        that fails every trial would otherwise fail them forever (failed trials do not count
        toward `--trials`). The error is the first failure's, with its log."""
        self.failed.append((number, log))
        if len(self.failed) < self.args.max_failures:
            return
        first, first_log = self.failed[0]
        raise UserError(
            f"{len(self.failed)} trials failed in a row (--max_failures {self.args.max_failures}),"
            f" the first, trial {first}, with: {error_line(first_log)} (log: {first_log})"
        )

    def fail_stale(self, study: optuna.Study) -> None:
        """Running trials whose worker stopped beating (killed, node lost): failed, and the
        same values enqueued again, to continue from the trial's last checkpoint."""
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.user_attrs.get("heartbeat", trial.datetime_start.timestamp())
            gone = worker_gone(trial.user_attrs)
            if now - beat < self.args.stale_after and not gone:
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):  # another worker failed it first
                continue
            retry_of = trial.user_attrs.get("retry_of", trial.number)
            retries = sum(t.user_attrs.get("retry_of") == retry_of for t in study.trials)
            why = f"no heartbeat for {now - beat:.0f} s"
            if gone:
                why = f"its worker {trial.user_attrs['worker']} has ended"
            stale = f"trial {trial.number} stale ({why})"
            if retries >= self.args.max_retries:  # a trial that kills its worker every time
                print(f"{stale}: not retried, trial {retry_of} was retried {retries} times "
                      f"(--max_retries {self.args.max_retries})", flush=True)  # fmt: skip
                continue
            study.enqueue_trial(trial.params, user_attrs={"retry_of": retry_of})
            print(f"{stale}: retried", flush=True)


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


class TrialStruck(RuntimeError):
    """A trial ended by a full, read-only or refused disk: the search stops (exit 74)."""


def heartbeat(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    every: float,
    stop: threading.Event,
    trial: subprocess.Popen,
    faults: list[OSError],
) -> None:
    """Beats until `stop`; a journal that refuses a beat (a full, read-only or refused disk)
    ends the trial (saved at its next step on SIGTERM, killed if it has not ended 10 s later),
    and its error, in `faults`, the search."""
    while not stop.wait(every):
        try:
            storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except OSError as error:
            faults.append(error)
            trial.terminate()
            try:
                trial.wait(10)
            except subprocess.TimeoutExpired:
                trial.kill()
            return
        except Exception:  # noqa: BLE001 (told or failed meanwhile: nothing left to beat for)
            return


def worker_name(index: int) -> str:
    """Who runs a trial: the Slurm task (the same after a requeue), or this host and process."""
    job = slurm_job()
    return f"slurm-{job}" if job else f"{os.uname().nodename}-{os.getpid()}-{index}"


def worker_gone(attrs: dict[str, Any]) -> bool:
    """Whether a trial's worker was a process on this host that has ended (a fault stopped the
    search, a kill): its trial is run again at once, not after `--stale_after` seconds."""
    host, pid, index = (attrs.get("worker", "").rsplit("-", 2) + ["", ""])[:3]
    if host != os.uname().nodename or not pid.isdigit() or not index.isdigit():
        return False  # a Slurm task (a requeue continues it), or another host's process
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False


def error_line(log: Path) -> str:
    """What a trial's log says went wrong: its `error:` line, or a traceback's last line."""
    lines = [line.strip() for line in tail(log, 200).splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return (errors or lines or ["(an empty log)"])[-1]


def tail(path: Path, lines: int = 5) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )
