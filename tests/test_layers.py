"""The package's layers, as the README draws them: each module imports only from its own layer or
the layers below it (models → data → task, callbacks → models, nothing below the CLI → search),
and every Callback lives in project/callbacks/."""

import ast
import importlib
import inspect
from pathlib import Path

import pytest
from lightning import Callback

PACKAGE = Path(__file__).resolve().parents[1] / "project"
# lowest first; a module may import from its own layer and those below
LAYERS = [
    {"errors", "task"},  # what every layer names
    # one concern each, none of them knows a model, data or callback
    {"weights", "schedules", "loggers", "figures", "hparams", "checkpoints", "runs"}
    | {"launch_checks", "files", "run_loggers", "study_storage", "crashes"},
    {"data"},
    {"models"},
    {"callbacks"},
    {"export", "export_inputs"},
    {"cli"},
    {"search"},  # the Optuna search, above the CLI: it runs `python -m project fit` trials
    {"__init__", "__main__"},
]
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}
# LightningCLI's `save_config_callback`: it saves the config only the CLI has parsed
CLI_CALLBACKS = {"project.cli.run_config.RunConfigFile"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit(path: Path) -> str:
    """`models` for project/models/image.py, `runs` for project/runs.py."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    """The units of project/ that `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.level == 0 else []
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name.split(".")[1] for name in names if name.startswith("project.")}
    return found


def test_every_module_has_a_layer() -> None:
    assert {unit(path) for path in modules()} <= set(RANK)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    upward = {u for u in imported_units(path) if RANK[u] > RANK[unit(path)]}
    assert not upward, f"{path.relative_to(PACKAGE)} imports from a higher layer: {upward}"


def test_the_layers_test_sees_an_upward_import(tmp_path: Path) -> None:
    """The checks above read what they must: an import inside a function counts too."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from project.search.worker import Worker\n")
    assert imported_units(module) == {"search"}


def test_every_callback_lives_in_callbacks() -> None:
    outside, empty = [], []
    for path in modules():
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if name.endswith(("__main__", "__init__")):
            continue
        module = importlib.import_module(name)
        classes = [
            c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == name
        ]
        callbacks = [c for c in classes if issubclass(c, Callback)]
        in_callbacks = name.startswith("project.callbacks.")
        outside += [
            f"{name}.{c.__name__}"
            for c in callbacks
            if not in_callbacks and f"{name}.{c.__name__}" not in CLI_CALLBACKS
        ]
        if in_callbacks and not callbacks:
            empty.append(name)
    assert not outside, f"Callbacks outside project/callbacks/: {outside}"
    assert not empty, f"modules in project/callbacks/ without a Callback: {empty}"
