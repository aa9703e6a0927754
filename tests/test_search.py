"""`python -m project.search`: the shipped space files against their experiments, bad input in
one line, and (slow) real studies: two local workers on one journal, `best.yaml` reproducing the
best trial, a rerun that resumes, a SIGKILLed worker whose trial is retried, a pruned DDP trial,
PostgreSQL storage. The Slurm array with a preempted worker is in tests/test_search_slurm.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from project.callbacks.trial_reporter import make_storage
from project.search.command import main as search_main
from project.search.space import read_space
from project.search.worker import ask_within_budget
from tests.callbacks import callback_flag, load_weights
from tests.conftest import CONFIGS, QUIET, ROOT, SEQUENCE, cli, service_missing

GRU = SEQUENCE / "gru.yaml"
SPACE = """\
optimizer.init_args.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
model.init_args.hidden_size: {type: int, low: 8, high: 24, step: 8}
"""
# 14 steps of batch 250 per epoch, cut to 4 (and 2 validation batches): seconds per trial
SMALL = [
    *("--data.init_args.batch_size", "250", "--trainer.max_epochs", "2"),
    *("--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", *QUIET),
]
POSTGRES = "PROJECT_TEST_POSTGRES"  # a URL: scripts/local_postgres.sh start (as .ci/run does)


def space_file(folder: Path, text: str = SPACE, name: str = "space") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def search(
    cwd: Path, *args: object, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m project.search ARGS` as a user types it, in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "project.search", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(folder: Path, storage: str | None = None) -> optuna.Study:
    """The study `space` of the GRU experiment run in `folder`."""
    url = storage or str(folder / "logs" / "gru" / "search" / "space" / "journal.log")
    return optuna.load_study(study_name="space", storage=make_storage(url))


def best_score(run: Path) -> float:
    """The best monitored value of a run, as its checkpoint callback kept it."""
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for v in saved["callbacks"].values() if "best_model_score" in v]
    return float(state["best_model_score"])


def tensorboard_hparams(run: Path) -> dict[str, object]:
    """The run's row in TensorBoard's HParams tab, read from its event file."""
    events = EventAccumulator(str(run))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = HParamsPluginData.FromString(content).session_start_info.hparams
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in values.items()}


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


# --- quick: the shipped spaces, and bad input --------------------------------------------------


@pytest.mark.parametrize(
    ("experiment", "space"),
    [
        ("sequence/gru.yaml", "search/gru.yaml"),
        ("image/finetune_stage2.yaml", "search/finetune_stage2.yaml"),
    ],
    ids=["gru", "finetune_stage2"],
)
def test_a_shipped_space_is_checked_against_its_experiment(
    experiment: str, space: str, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    """--prepare checks every key through the CLI's parser and creates the study, no trial."""
    search_main(["-c", str(CONFIGS / experiment), "--space", str(CONFIGS / space), "--prepare"])
    out = capsys.readouterr().out
    assert "minimize val/loss" in out, out
    name = Path(space).stem
    folder = workdir / "logs" / Path(experiment).stem / "search" / name
    study = optuna.load_study(study_name=name, storage=make_storage(str(folder / "journal.log")))
    assert study.user_attrs["monitor"] == "val/loss"
    assert study.trials == []


BAD_SPACES = {
    "unknown section": ("modle.init_args.hidden_size: {type: int, low: 8, high: 16}\n", "modle"),
    "key the config lacks": (
        "model.init_args.hiden_size: {type: int, low: 8, high: 16}\n",
        "hiden_size",
    ),
    "low above high": ("optimizer.init_args.lr: {type: float, low: 0.1, high: 0.01}\n", "low"),
    "unknown type": ("optimizer.init_args.lr: {type: uniform, low: 0.1, high: 1}\n", "type"),
    "unknown option": ("optimizer.init_args.lr: {type: float, low: 0.1, hi: 1}\n", "hi"),
    "empty choices": ("model.init_args.cell: {type: categorical, choices: []}\n", "choices"),
    "not a mapping": ("- optimizer.init_args.lr\n", "map"),
}
BAD_FLAGS = {
    "no trials": (["--trials", "0"], "--trials"),
    "negative jobs": (["--jobs", "-1"], "--jobs"),
    "threshold pruner without threshold": (["--pruner", "threshold"], "--pruner_threshold"),
    "unreachable storage": (["--storage", "postgresql://nobody:x@127.0.0.1:9/none"], "storage"),
}


@pytest.mark.parametrize(
    ("space", "flags", "names"),
    [(text, [], word) for text, word in BAD_SPACES.values()]
    + [(SPACE, flags, word) for flags, word in BAD_FLAGS.values()],
    ids=[*BAD_SPACES, *BAD_FLAGS],
)
def test_bad_input_is_one_line_and_writes_nothing(
    space: str, flags: list[str], names: str, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    path = space_file(workdir, space)
    with pytest.raises(SystemExit) as exit:
        search_main(["-c", str(GRU), "--space", str(path), *flags])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and names in err, err
    assert not (workdir / "logs").exists(), "a refused search wrote files"


@pytest.mark.parametrize("budget", [1, 3])
def test_a_trial_asked_when_the_budget_is_full_is_given_back_unrun(
    budget: int, tmp_path: Path
) -> None:
    """Workers that ask at the same moment: the trials asked first fill the budget, a later one
    is failed and marked, and the study never holds more live trials than the budget."""
    storage = make_storage(str(tmp_path / "journal.log"))
    study = optuna.create_study(storage=storage, study_name="race")
    space = read_space(space_file(tmp_path))
    asked = [study.ask(space) for _ in range(budget)]  # running in other workers
    if budget > 1:
        study.tell(asked[0], 1.0)  # one of them already finished: it still counts
    assert ask_within_budget(study, space, budget) is None
    extra = study.trials[-1]
    assert extra.state == TrialState.FAIL and extra.user_attrs["over_budget"] is True
    study.tell(asked[-1], state=TrialState.FAIL)  # a failed trial frees its place
    assert ask_within_budget(study, space, budget) is not None
    live = [t for t in study.trials if t.state != TrialState.FAIL]
    assert len(live) == budget


# --- slow: real studies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 trials by 2 local workers on one journal file, no pruner: every trial runs to its end."""
    folder = tmp_path_factory.mktemp("search")
    space = space_file(folder)
    args = ["-c", GRU, "--space", space, "--trials", 6, "--jobs", 2, "--pruner", "none", *SMALL]
    result = search(folder, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.mark.slow
def test_two_local_workers_share_one_study_without_losing_or_repeating_a_trial(
    searched: Path,
) -> None:
    trials = load(searched).trials
    assert [t.number for t in trials] == list(range(6))
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "one worker did all the trials"
    runs = [Path(t.user_attrs["run"]) for t in trials]
    assert [r.name for r in runs] == [f"trial-{n:04d}" for n in range(6)]
    for trial, run in zip(trials, runs, strict=True):
        run = searched / run
        # an ordinary run: config, curves, metrics, and the trial in its hparams
        assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
        assert json.loads((run / "metrics.json").read_text())["val/loss"] > 0
        hparams = tensorboard_hparams(run)
        assert hparams["search/trial"] == trial.number and hparams["search/study"] == "space"
        assert hparams["model/hidden_size"] == trial.params["model.init_args.hidden_size"]
        # the objective is the best epoch's value, as the checkpoint callback kept it
        assert trial.value == pytest.approx(best_score(run), abs=1e-7)


@pytest.mark.slow
def test_the_report_ranks_the_trials_and_best_yaml_reproduces_the_best(searched: Path) -> None:
    study = load(searched)
    folder = searched / "logs" / "gru" / "search" / "space"
    table = (folder / "trials.md").read_text()
    best = study.best_trial
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 6 and rows[0].startswith(f"| {best.number} "), table
    for plot in ("history", "importances", "parallel_coordinates"):
        assert (folder / "report" / f"{plot}.png").stat().st_size > 1000
    os.chdir(searched)
    try:
        cli("fit", "-c", folder / "best.yaml", *QUIET)
    finally:
        os.chdir(ROOT)
    (run,) = (searched / "logs" / "space_best").glob("version_*")
    assert round(best_score(run), 4) == round(best.value, 4)


@pytest.mark.slow
def test_rerunning_a_finished_search_runs_no_more_trials(searched: Path) -> None:
    space = searched / "space.yaml"
    args = ["-c", GRU, "--space", space, "--trials", 6, "--jobs", 2, "--pruner", "none", *SMALL]
    result = search(searched, *args)
    assert result.returncode == 0, result.stderr
    assert len(load(searched).trials) == 6
    assert not re.search(r"^trial \d+ \(", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    """The whole process group SIGKILLed mid-trial (a node lost); rerunning the command finds
    the trial without heartbeats, fails it, and runs its values again from its checkpoint."""
    space = space_file(tmp_path)
    slow = callback_flag("SlowBatches", seconds=0.3, progress="progress")
    args = ["-c", GRU, "--space", space, "--trials", 2, "--pruner", "none", *SMALL, *slow]
    args += ["--heartbeat", 0.5, "--stale_after", 3]
    first = subprocess.Popen(
        [sys.executable, "-m", "project.search", *map(str, args)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the worker and its trial die with it
    )
    progress = tmp_path / "logs" / "gru" / "search" / "space" / "trial-0000" / "progress"
    started = time.monotonic()
    while not (progress.exists() and int(progress.read_text() or 0) >= 6):  # in epoch 2
        assert first.poll() is None, "the search ended before it was killed"
        assert time.monotonic() - started < 240, "the first trial never reached epoch 2"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = load(tmp_path).trials[0]
    assert killed.state == TrialState.RUNNING  # nobody told the study

    time.sleep(3.5)  # longer than --stale_after
    result = search(tmp_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale" in result.stdout, result.stdout
    trials = load(tmp_path).trials
    assert trials[0].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert retries[0].user_attrs["run"] == killed.user_attrs["run"]  # the same run, continued
    assert f"trial {retries[0].number} (continuing from" in result.stdout, result.stdout
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


@pytest.mark.slow
def test_a_pruned_ddp_trial_ends_on_both_ranks_with_the_same_parameters(tmp_path: Path) -> None:
    """Rank 0 asks the pruner; both ranks stop after the same epoch, nothing hangs."""
    space = space_file(tmp_path)
    weights = tmp_path / "weights"
    args = ["-c", GRU, "-c", CONFIGS / "trainer" / "ddp_cpu.yaml", "--space", space]
    args += ["--trials", 1, "--pruner", "threshold", "--pruner_threshold", 0]  # any loss > 0
    args += ["--pruner_warmup_epochs", 0, *SMALL, "--trainer.max_epochs", 3]
    args += callback_flag("SaveWeights", folder=str(weights))
    result = search(tmp_path, *args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (trial,) = load(tmp_path).trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    ranks = load_weights(weights)
    assert sorted(ranks) == [0, 1] and ranks[0]["world_size"] == 2
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == 1  # stopped after the first epoch
    assert ranks[0]["hparams"] == ranks[1]["hparams"] and ranks[0]["lr"] == ranks[1]["lr"]
    assert ranks[0]["hparams"]["hidden_size"] == str(trial.params["model.init_args.hidden_size"])
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name


@pytest.mark.slow
def test_a_study_in_postgresql(tmp_path: Path) -> None:
    url = os.environ.get(POSTGRES)
    if not url:
        service_missing(f"no {POSTGRES}: a PostgreSQL URL (scripts/local_postgres.sh start)")
    name = f"test-{uuid.uuid4().hex[:8]}"
    space = space_file(tmp_path, name=name)
    args = ["-c", GRU, "--space", space, "--storage", url, "--trials", 3, "--jobs", 2, *SMALL]
    try:
        result = search(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        study = optuna.load_study(study_name=name, storage=url)
        assert [t.number for t in study.trials] == [0, 1, 2]
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
        assert not (tmp_path / "logs" / "gru" / "search" / name / "journal.log").exists()
        assert (tmp_path / "logs" / "gru" / "search" / name / "best.yaml").is_file()
    finally:
        optuna.delete_study(study_name=name, storage=url)
