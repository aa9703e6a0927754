"""The README's "Add your model, your data" examples, as printed there: the model, the data and
the experiment config are taken from the README's code blocks and trained through the CLI."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import QUIET, ROOT, cli, run_dirs

SECTION = "## Add your model, your data"


def readme_files() -> dict[str, str]:
    """The section's code blocks by the file name on their first line (`# my_models.py: ...`)."""
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", section, flags=re.S)
    return {re.match(r"# ([\w.]+)", block).group(1): block for block in blocks}


def test_the_examples_are_short() -> None:
    files = readme_files()
    assert set(files) == {"my_models.py", "my_data.py", "my_experiment.yaml"}
    for name in ("my_models.py", "my_data.py"):
        assert len(files[name].splitlines()) < 40, name


def test_the_readme_model_and_data_train_through_the_cli(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in readme_files().items():
        (workdir / name).write_text(text)
    monkeypatch.syspath_prepend(str(workdir))  # PYTHONPATH=. in the README's command
    cli("fit", "-c", workdir / "my_experiment.yaml", "--test_after_fit", "true", *QUIET)
    (run,) = run_dirs(workdir, "my_experiment")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.9  # 4 frequencies in noise; chance is 0.25
    assert "channels: 32" in (run / "config.yaml").read_text()
