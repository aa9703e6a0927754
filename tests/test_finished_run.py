"""A tiny run fitted, then validated, tested and predicted from its folder, each as a user types
it: no warnings, and a record of what produced the run that the later commands leave alone."""

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from project.cli.provenance import git_state
from tests.conftest import QUIET, ROOT, SEQUENCE, cli_process

pytestmark = pytest.mark.slow  # four processes, each a fresh start of torch and Lightning
SUBCOMMANDS = ("fit", "validate", "test", "predict")
VERSIONS = {"python", "torch", "lightning", "torchvision", "torchmetrics"}
# Lightning's own format ("file.py:12: message") and Python's ("file.py:12: UserWarning: ...")
WARNING = re.compile(r"\.py:\d+: |warn", re.IGNORECASE)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The run's folder, its provenance.json right after the fit, and each command's result."""
    folder = tmp_path_factory.mktemp("finished_run")
    tiny = ["--trainer.max_epochs=1", "--trainer.log_every_n_steps=1"]  # a curve from 2 steps
    tiny += [f"--trainer.limit_{split}_batches=2" for split in ("train", "val", "test", "predict")]
    with pytest.MonkeyPatch.context() as patch:
        # every warning, also the deprecations Python hides by default
        patch.setenv("PYTHONWARNINGS", "always")
        patch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "all")
        fit = cli_process("fit", "-c", SEQUENCE / "gru.yaml", *tiny, *QUIET, cwd=folder)
        assert fit.returncode == 0, fit.stderr
        run = folder / "logs" / "gru" / "version_0"
        provenance = (run / "provenance.json").read_text()
        results = {"fit": fit}
        for subcommand in SUBCOMMANDS[1:]:
            results[subcommand] = cli_process(
                subcommand, "-c", run / "config.yaml", "--ckpt_path", "best", *QUIET, cwd=folder
            )
    return {"run": run, "provenance": provenance, "results": results}


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_a_clean_run_prints_no_warning(finished: dict, subcommand: str) -> None:
    result = finished["results"][subcommand]
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if WARNING.search(line)] == []


def test_the_run_records_what_produced_it(finished: dict) -> None:
    record = json.loads(finished["provenance"])
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if git.returncode == 0:
        assert record["git"]["commit"] == git.stdout.strip()
        assert isinstance(record["git"]["dirty"], bool)
    else:
        assert record["git"] == "not a git checkout"
    assert set(record["versions"]) == VERSIONS
    assert record["command"][1:4] == ["fit", "-c", str(SEQUENCE / "gru.yaml")]
    assert record["host"] == socket.gethostname()
    assert Path(record["cwd"]).resolve() == finished["run"].parents[2].resolve()


def test_later_commands_keep_the_record(finished: dict) -> None:
    assert (finished["run"] / "provenance.json").read_text() == finished["provenance"]


def test_the_record_is_in_tensorboard_beside_the_config(finished: dict) -> None:
    texts = {}
    for events in sorted(finished["run"].glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            if tag.endswith("/text_summary"):
                for event in accumulator.Tensors(tag):
                    texts.setdefault(tag, []).append(event.tensor_proto.string_val[0].decode())
    assert {"config/text_summary", "provenance/text_summary"} <= set(texts)
    (text,) = texts["provenance/text_summary"]  # written by the fit only
    assert json.loads(text) == json.loads(finished["provenance"])  # indented, for TensorBoard


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_only_a_checkout_of_the_code_folder_itself_counts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_state(repo) == {"commit": head.strip(), "dirty": False}
    (repo / "lib").mkdir()
    (repo / "lib" / "new.py").write_text("")
    assert git_state(repo) == {"commit": head.strip(), "dirty": True}
    # e.g. the package installed into a virtualenv that lies inside some checkout
    assert git_state(repo / "lib") == "not a git checkout"
    assert git_state(tmp_path) == "not a git checkout"
