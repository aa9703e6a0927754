"""What produced a run: `provenance.json` in its folder, also shown in TensorBoard's text tab.

Written when a fit starts, beside `config.yaml`; never replaced (a Slurm requeue or a later
`validate`/`test` of the run leaves the first record). The config says what was asked; this says
with which code (the git commit, and whether files differed from it), which package versions,
which command and on which machine.
"""

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lightning import Trainer

from project.runs import run_folder_on_rank_zero

PACKAGES = ("torch", "lightning", "torchvision", "torchmetrics")
CODE = Path(__file__).resolve().parents[2]  # the folder that holds the `project` package
FILE_NAME = "provenance.json"


def git_state(folder: Path = CODE) -> dict[str, Any] | str:
    """The commit `folder` is checked out at and whether its files differ from it (changed,
    added or deleted, untracked files included), or "not a git checkout"."""
    try:
        top, commit = git(folder, "rev-parse", "--show-toplevel", "HEAD").splitlines()
        # an installed copy of the package (site-packages) inside some other repository's
        # folder (a virtualenv in a checkout) is not that repository's code
        if Path(top).resolve() != folder.resolve():
            return "not a git checkout"
        changed = git(folder, "status", "--porcelain").splitlines()
    except (OSError, subprocess.SubprocessError, ValueError):  # no git, no repository, no HEAD
        return "not a git checkout"
    return {"commit": commit, "dirty": bool(changed)}


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def provenance() -> dict[str, Any]:
    record = {
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": git_state(),
        "versions": {"python": platform.python_version()}
        | {name: package_version(name) for name in PACKAGES},
        "command": sys.argv,  # relative paths in it are from `cwd`
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
    }
    if "SLURM_JOB_ID" in os.environ:
        record["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return record


def save_provenance(trainer: Trainer) -> None:
    """Writes `provenance.json` into the run's folder, unless there is one, and adds it to
    TensorBoard's text tab. Called on rank zero only (`SaveConfigCallback.save_config`)."""
    folder = run_folder_on_rank_zero(trainer) or Path(trainer.default_root_dir)
    path = folder / FILE_NAME
    if path.exists():
        return
    text = json.dumps(provenance(), indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    experiment = getattr(trainer.logger, "experiment", None)
    if hasattr(experiment, "add_text"):
        # four leading spaces: TensorBoard renders the text as markdown, this keeps it verbatim
        experiment.add_text("provenance", "    " + text.replace("\n", "\n    "))
