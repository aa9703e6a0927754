"""A search space file (configs/search/*.yaml): the CLI's dotted keys and Optuna distributions.

optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
model.init_args.hidden_size: {type: int, low: 32, high: 256, step: 32}
model.init_args.cell: {type: categorical, choices: [gru, lstm]}
"""

import json
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from project.errors import UserError

KINDS = {"float": FloatDistribution, "int": IntDistribution, "categorical": CategoricalDistribution}
SECTIONS = (
    "model",
    "data",
    "optimizer",
    "lr_scheduler",
    "trainer",
    "checkpoint",
    "seed_everything",
)


def read_space(path: Path) -> dict[str, BaseDistribution]:
    """The distributions of a space file, checked: one line (`UserError`) for any mistake."""
    try:
        entries = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"search space {path} not found") from None
    except yaml.YAMLError as error:
        raise UserError(
            f"search space {path} is not YAML: {' '.join(str(error).split())}"
        ) from None
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"search space {path} must map CLI keys to distributions")
    return {str(key): distribution(str(key), spec) for key, spec in entries.items()}


def distribution(key: str, spec: Any) -> BaseDistribution:
    if key.split(".")[0] not in SECTIONS:
        raise UserError(
            f"search space key {key!r}: a key starts with one of {', '.join(SECTIONS)}, "
            "like the CLI's flags (e.g. optimizer.init_args.lr)"
        )
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise UserError(f"search space {key}: give a type: {' | '.join(KINDS)}, got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "type"}
    try:
        made = KINDS[spec["type"]](**options)
    except (TypeError, ValueError) as error:  # unknown option, low > high, log with step, …
        raise UserError(f"search space {key}: {' '.join(str(error).split())}") from None
    if isinstance(made, CategoricalDistribution) and len(made.choices) < 1:
        raise UserError(f"search space {key}: no choices")
    return made


def example_value(dist: BaseDistribution) -> Any:
    """A value the distribution can draw (for checking the keys before any trial)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    return dist.low


def flags(params: dict[str, Any]) -> list[str]:
    """`--key value` flags for the CLI; values as JSON, which jsonargparse reads back as given."""
    words: list[str] = []
    for key, value in params.items():
        words += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return words
