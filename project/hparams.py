"""A run's hyperparameters as TensorBoard's HParams tab and `hparams.yaml` show them: what its
`config.yaml` sets, by short names (`model/hidden_size`, `optimizer/lr`, `data/batch_size`,
`trainer/max_epochs`), never LightningCLI's internals (`_class_path`, `_instantiator`)."""

import inspect
import json
from functools import cache
from typing import Any

from lightning import Trainer

# the sections that hold a class and its arguments, in the order a table shows them
CLASS_SECTIONS = ("model", "data", "optimizer", "lr_scheduler")
# trainer settings that change what is learned or measured; others (logging, progress bars,
# where files go) say nothing about a result. Shown when they differ from Lightning's default;
# these two always, since every run has them
TRAINING_SETTINGS = (
    "max_epochs", "max_steps", "min_epochs", "min_steps", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "precision", "devices", "num_nodes",
    "strategy", "limit_train_batches", "limit_val_batches", "overfit_batches",
    "val_check_interval", "check_val_every_n_epoch", "deterministic", "benchmark",
)  # fmt: skip
ALWAYS = ("max_epochs", "precision")
# arguments that choose how a thing is computed, not what: the same run with other values
# gives the same numbers (up to float rounding), so a table comparing runs leaves them out
MECHANICS = {
    "foreach", "fused", "capturable", "differentiable", "last_epoch", "verbose",
    "num_workers", "pin_memory", "persistent_workers",
}  # fmt: skip

Value = bool | int | float | str


def run_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """`{"model": {"class": "SequenceClassifier", "hidden_size": 128, ...}, "optimizer": ...,
    "trainer": {...}, "callbacks": {"EarlyStopping": {...}}, "seed": 42}` from a run's config
    (as `config.yaml` holds it)."""
    hparams: dict[str, Any] = {}
    for section in CLASS_SECTIONS:
        if isinstance(config.get(section), dict):
            hparams[section] = class_and_args(config[section])
    trainer = config.get("trainer") or {}
    defaults = trainer_defaults()
    settings = {
        key: trainer[key]
        for key in TRAINING_SETTINGS
        if key in trainer and (key in ALWAYS or trainer[key] != defaults.get(key))
    }
    if settings.get("precision", "") is None:
        settings["precision"] = "32-true"  # what Lightning runs when none is given
    hparams["trainer"] = {k: short(v) if isinstance(v, dict) else v for k, v in settings.items()}
    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    configured = {}
    for callback in callbacks:
        if isinstance(callback, dict) and "class_path" in callback:
            args = class_and_args(callback)
            configured[args.pop("class")] = args
    if configured:
        hparams["callbacks"] = configured
    if config.get("seed_everything") is not None:
        hparams["seed"] = config["seed_everything"]
    return hparams


def tab_values(hparams: dict[str, Any]) -> dict[str, Value]:
    """`run_hparams` flattened to `model/hidden_size`-style names, a section's class under the
    section's own name, with values TensorBoard shows as they are: booleans as true/false (its
    HParams tab would show 1.0000), None as none, lists as JSON."""
    flat: dict[str, Value] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(name if key == "class" else f"{name}/{key}", inner)
        elif isinstance(value, bool) or value is None:
            flat[name] = json.dumps(value).replace("null", "none")
        elif isinstance(value, int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)

    for key, value in hparams.items():
        add(key, value)
    return flat


def class_and_args(spec: dict[str, Any]) -> dict[str, Any]:
    args = spec.get("init_args") or {}
    chosen = {k: v for k, v in args.items() if not k.startswith("_") and k not in MECHANICS}
    return {"class": short(spec), **chosen}


def short(spec: dict[str, Any]) -> str:
    """`torch.optim.Adam` → `Adam`: the class, as a person names it."""
    return str(spec.get("class_path", "")).rsplit(".", 1)[-1]


@cache
def trainer_defaults() -> dict[str, Any]:
    parameters = inspect.signature(Trainer.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
