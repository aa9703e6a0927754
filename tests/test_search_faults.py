"""A search that meets faults ends: trials that all fail stop it after `--max_failures` with the
first failure's error and log; a stale trial is retried at most `--max_retries` times; a journal
cut mid-line still loads. The PostgreSQL restart is in tests/test_search_postgres.py. (A fault
on the journal's disk does not stop the search yet: docs/faults.md.)"""

import argparse
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from project.search.study import Search
from project.search.worker import SearchWorker
from project.study_storage import make_storage
from tests.conftest import ROOT
from tests.test_model_mistakes import MISTAKES
from tests.test_readme_examples import readme_files
from tests.test_search import SMALL, load, search, space_file


def worker_over(tmp_path: Path, **settings: object) -> SearchWorker:
    """A worker of a study in a journal under `tmp_path`, with the command's defaults."""
    args = argparse.Namespace(
        config=["gru.yaml"], space=tmp_path / "space.yaml", study="s", seed=0, worker=0,
        storage=str(tmp_path / "journal.log"), trials=5, heartbeat=30.0, stale_after=60.0,
        max_failures=3, max_retries=2,
    )  # fmt: skip
    for key, value in settings.items():
        setattr(args, key, value)
    return SearchWorker(args, [])


def test_a_stale_trial_is_retried_at_most_max_retries_times(tmp_path: Path) -> None:
    """A trial whose worker dies every time (it kills its node, say) is run again at most
    `--max_retries` times, and not forever."""
    for max_retries in (0, 1, 3):
        worker = worker_over(tmp_path, study=f"s{max_retries}", max_retries=max_retries)
        study = Search.study(worker, "minimize")
        space = {"x": optuna.distributions.FloatDistribution(0, 1)}
        waiting = True  # the trial, then each retry the study enqueues
        while waiting:
            trial = study.ask(space)
            trial.set_user_attr("heartbeat", time.time() - 3600)  # its worker died an hour ago
            worker.fail_stale(study)
            waiting = bool(study.get_trials(states=(TrialState.WAITING,)))
            assert len(study.trials) <= max_retries + 1, "retried more than --max_retries"
        retries = [t for t in study.trials if "retry_of" in t.user_attrs]
        assert len(retries) == max_retries
        assert all(t.user_attrs["retry_of"] == 0 for t in retries)
        assert all(t.params == study.trials[0].params for t in retries)


@pytest.mark.parametrize("cut", [1, 17, -1])
def test_a_journal_cut_mid_line_loads_and_takes_new_trials(tmp_path: Path, cut: int) -> None:
    """A full disk or a kill leaves part of a journal line: the study still loads, and what is
    written next is not glued to the part (Optuna's own backend then fails to load it)."""
    journal = tmp_path / "journal.log"
    study = optuna.create_study(study_name="s", storage=make_storage(str(journal)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = journal.read_bytes()
    partial = b'{"op_code":8,"worker_id":"w","trial_id":1,"user_attr":{"heartbeat":1.0}}'
    journal.write_bytes(whole + partial[:cut])
    study = optuna.load_study(study_name="s", storage=make_storage(str(journal)))
    assert journal.read_bytes() == whole
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    reloaded = optuna.load_study(study_name="s", storage=make_storage(str(journal)))
    assert len(reloaded.trials) == 3


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_stops_with_the_first_error(tmp_path: Path) -> None:
    """The README's model without the OptimizerCallable hint fails every trial: the search
    stops after `--max_failures`, exits non-zero, and says why in one line, with the log."""
    files = readme_files()
    (old, new), expected = (
        MISTAKES["optimizer without OptimizerCallable"][0][0],
        "OptimizerCallable",
    )
    (tmp_path / "my_models.py").write_text(files["my_models.py"].replace(old, new))
    (tmp_path / "my_data.py").write_text(files["my_data.py"])
    (tmp_path / "experiment.yaml").write_text(files["my_experiment.yaml"])
    space = space_file(tmp_path, "optimizer.init_args.lr: {type: float, low: 0.001, high: 0.01}\n")
    args = ["-c", "experiment.yaml", "--space", space, "--trials", 3, "--max_failures", 2, *SMALL]
    result = search(tmp_path, *args, env={"PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    log = "logs/experiment/search/space/trial-0000.out"
    assert "2 trials failed in a row" in line and "trial 0" in line, line
    assert expected in line and log in line, line
    journal = tmp_path / "logs" / "experiment" / "search" / "space" / "journal.log"
    trials = load(tmp_path, str(journal)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
