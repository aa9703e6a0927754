"""A search's study: where it lives, what each trial runs, and the checks made before anything
is written. The command line is project/search/command.py, a worker project/search/worker.py."""

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from project.errors import UserError
from project.runs import slurm_job
from project.search.space import example_value, flags, read_space
from project.study_storage import make_storage

ROOT = Path(__file__).resolve().parents[2]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_PLAY = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)


class Search:
    """One study: where it lives, what a trial runs, and how it is checked and opened."""

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
        if self.args.max_failures <= 0:
            raise UserError(f"--max_failures must be > 0, got {self.args.max_failures}")
        if self.args.max_retries < 0:
            raise UserError(f"--max_retries must be >= 0, got {self.args.max_retries}")
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
            # the pruner acts in the trials' processes (callbacks/trial_reporter.py), not here
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
            raise UserError(f"storage {self.shown_storage()} unreachable: {first}") from None

    def shown_storage(self) -> str:
        """The storage URL as printed: without its password."""
        if "://" not in self.storage_url:
            return self.storage_url
        import sqlalchemy.engine

        return sqlalchemy.engine.make_url(self.storage_url).render_as_string(hide_password=True)

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


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
