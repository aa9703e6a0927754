"""What the CLI gives a model that only subclasses LightningModule: the data's facts and the
config's `optimizer:`/`lr_scheduler:` reach only models whose `__init__` takes them, and a
setting that such a model cannot take is a one-line note, never a silent no-op."""

import importlib
import inspect
import sys

from jsonargparse import Namespace


def init_parameters(class_path: str) -> set[str]:
    """The names `class_path`'s `__init__` takes; every name for one that takes `**kwargs`."""
    module, _, name = class_path.rpartition(".")
    parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {"optimizer", "lr_scheduler"}
    return set(parameters)


def note_settings_the_model_ignores(config: Namespace) -> None:
    """A config's `optimizer:` or `lr_scheduler:` for a model that builds its own (its
    `configure_optimizers`): a note that it is not used. (jsonargparse leaves a link to an
    argument a model does not have unapplied, the data's facts included.)"""
    class_path = str(config.model.get("class_path", ""))
    if not class_path or "." not in class_path:
        return
    taken = init_parameters(class_path)
    for key in ("optimizer", "lr_scheduler"):
        if config.get(key) is not None and key not in taken:
            print(f"note: {key}: not used: {class_path.rpartition('.')[2]} takes no `{key}` "
                  "argument; its configure_optimizers builds its own", file=sys.stderr)  # fmt: skip
