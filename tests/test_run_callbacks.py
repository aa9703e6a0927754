"""A run's callbacks come by one route, project/run.yaml's `run_callbacks`: `--print_config`
shows them, the Trainer runs them in that order with `LastCheckpoint` last, an overlay adds one
with `run_callbacks+:`, the user's `trainer.callbacks` never replace them, and no callback's
unimplemented per-batch hook is dispatched."""

from pathlib import Path

import pytest
import yaml
from lightning import Callback
from lightning.pytorch.callbacks import ProgressBar

from project.cli import make_cli
from project.cli.app import RUN_DEFAULTS
from project.cli.unused_hooks import BATCH_HOOKS
from tests.conftest import CONFIGS, SEQUENCE, cli

LISTED = [spec["class_path"] for spec in yaml.safe_load(RUN_DEFAULTS.read_text())["run_callbacks"]]


def class_paths(callbacks: list) -> list[str]:
    return [f"{type(c).__module__.split('.')[0]}.{type(c).__name__}" for c in callbacks]


def short(path: str) -> str:
    """`project.callbacks.RunResults` → `project.RunResults`: package and class."""
    return f"{path.split('.')[0]}.{path.rsplit('.', 1)[-1]}"


def test_print_config_lists_a_runs_callbacks(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli("fit", "-c", SEQUENCE / "gru.yaml", "--print_config")
    printed = yaml.safe_load(capsys.readouterr().out)
    assert [spec["class_path"] for spec in printed["run_callbacks"]] == LISTED
    assert printed["checkpoint"]["monitor"] == "val/loss"


OVERLAYS = {
    "the default run": ([], LISTED),
    "progress bar off": (
        ["--trainer.enable_progress_bar", "false"],
        [c for c in LISTED if not c.endswith("ProgressBar")],
    ),
    "an overlay's callback": (
        ["-c", CONFIGS / "trainer" / "early_stopping.yaml"],
        LISTED,
    ),
    "the user's callbacks replaced": (
        [
            "--trainer.callbacks",
            "[lightning.pytorch.callbacks.EarlyStopping]",
            "--trainer.callbacks.monitor",
            "val/loss",
        ],
        LISTED,
    ),  # fmt: skip
    "one added to run_callbacks": (
        ["--run_callbacks+", "lightning.pytorch.callbacks.DeviceStatsMonitor"],
        [*LISTED, "lightning.pytorch.callbacks.DeviceStatsMonitor"],
    ),
}


@pytest.mark.parametrize("case", OVERLAYS, ids=lambda c: c.replace(" ", "-"))
def test_the_trainer_runs_the_listed_callbacks_in_order(case: str, workdir: Path) -> None:
    args, ours = OVERLAYS[case]
    built = make_cli(["-c", str(SEQUENCE / "gru.yaml"), *map(str, args)], run=False)
    names = [short(p) for p in class_paths(built.trainer.callbacks)]
    listed = [short(p) for p in ours]
    # the template's in their listed order, among the user's and Lightning's own
    assert [n for n in names if n in {short(p) for p in LISTED} | set(listed)] == listed
    # after them all: the last checkpoint (then Lightning's own: the summary, the checkpoints)
    assert names.index("project.LastCheckpoint") > max(names.index(n) for n in listed)
    bars = [c for c in built.trainer.callbacks if isinstance(c, ProgressBar)]
    assert len(bars) == (0 if "off" in case else 1)
    if "early_stopping" in " ".join(map(str, args)) or "EarlyStopping" in " ".join(args):
        assert "lightning.EarlyStopping" in names
    # every callback, whoever's, keeps exactly the per-batch hooks its class implements
    for callback in built.trainer.callbacks:
        for hook in BATCH_HOOKS:
            implemented = getattr(type(callback), hook) is not getattr(Callback, hook)
            assert callable(getattr(callback, hook)) == implemented, (callback, hook)
