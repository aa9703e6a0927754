"""A slip in a user's model class (the README's example model with one mistake each) is one line
that names the fix and the README's contract, before any training: exit code 2, no traceback,
no run folder."""

from pathlib import Path

import pytest

from project.cli import main
from project.models.contract import CONTRACT
from tests.conftest import QUIET
from tests.test_readme_examples import readme_files

INIT_FACTS = """        input_size: int,  # these three come from the data
        num_outputs: int,
        task: Task = "classification",
"""
# mistake: (the README model's text -> the mistaken text, what the line must say)
MISTAKES = {
    "optimizer without OptimizerCallable": (
        [("optimizer: OptimizerCallable | None = None,", "optimizer=None,")],
        "`optimizer` has no type hint OptimizerCallable",
    ),
    "lr_scheduler without LRSchedulerCallable": (
        [("lr_scheduler: LRSchedulerCallable | None = None", "lr_scheduler: object = None")],
        "`lr_scheduler` has no type hint LRSchedulerCallable",
    ),
    "__init__ without the data's facts": (
        [
            (INIT_FACTS, ""),
            (
                "super().__init__(num_outputs, task, optimizer, lr_scheduler)",
                "super().__init__(4, optimizer=optimizer, lr_scheduler=lr_scheduler)",
            ),
            ("ConvNet1D(input_size, num_outputs, channels)", "ConvNet1D(1, 4, channels)"),
        ],  # fmt: skip
        "__init__ does not take num_outputs, which the data gives",
    ),
    "no self.net": (
        [("self.net = ConvNet1D", "self.body = ConvNet1D")],
        "sets no `self.net`",
    ),
    "forward returns too many outputs": (
        [("nn.Linear(channels, num_outputs)", "nn.Linear(channels, num_outputs + 1)")],
        "forward returned shape (100, 5) for a batch of 100; with num_outputs=4 it must return "
        "(100, 4)",
    ),
    "forward returns one value per sample": (
        [("nn.Linear(channels, num_outputs)", "nn.Linear(channels, 1)")],
        "forward returned shape (100, 1) for a batch of 100",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_in_a_model_class_is_one_line_naming_the_contract(
    mistake: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    files = readme_files()
    changes, expected = MISTAKES[mistake]
    model = files["my_models.py"]
    for old, new in changes:
        assert old in model, old  # the README still reads as this test expects
        model = model.replace(old, new)
    module = f"mistaken_{abs(hash(mistake))}"
    (workdir / f"{module}.py").write_text(model)
    (workdir / "my_data.py").write_text(files["my_data.py"])
    config = files["my_experiment.yaml"].replace("my_models.", f"{module}.")
    (workdir / "experiment.yaml").write_text(config)
    monkeypatch.syspath_prepend(str(workdir))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["fit", "-c", "experiment.yaml", "--trainer.max_epochs", "1", *QUIET])
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: model ") and expected in line and CONTRACT in line, line
    assert not list(workdir.glob("logs/*/version_*/checkpoints/*.ckpt"))
