"""Turns jsonargparse's nested error reports into one line that names the key and the fix."""

import importlib
import inspect
import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
)


def accepted_options(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]


def one_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    kept = [line.removeprefix("- ") for line in lines if not line.startswith(NOISE)]
    text = " ".join(kept)
    unknown = re.search(r"class_path '([\w.]+)'.*Option '(\w+)' is not accepted", text)
    if unknown:
        options = accepted_options(unknown.group(1))
        if options:
            text += f"; accepted: {', '.join(options)}"
    return text


class ConciseArgumentParser(LightningArgumentParser):
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # parsing inside jsonargparse that expects to catch this
            super().error(message, ex)
        sys.stderr.write(f"error: {one_line(message)} (options: python -m project fit --help)\n")
        self.exit(2)
