"""Errors as one line: jsonargparse's nested reports, naming the key and the fix; abbreviated
options, refused, naming the one most likely meant; and which exceptions are a user's mistake."""

import difflib
import importlib
import inspect
import re
import sys
from functools import partial
from typing import NoReturn

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser

from project.cli.carried_settings import parsed_with_notes
from project.errors import UserError, chain_of

# jsonargparse reports a parse error as text only, no structured fields, so the lines below and
# the "Option 'x' is not accepted" pattern are read from its wording: pyproject.toml caps
# jsonargparse below the next minor release and tests/test_jsonargparse_api.py fails when the
# installed one words them otherwise. Upstream: https://github.com/mauvilsa/jsonargparse/issues/695
# (open: union errors are hard to read); no upstream issue asking for errors as data was found.
NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
)


# the options that set no value, so have no key among the defaults
NO_DEFAULT = ("--help", "--print_config")


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


def closest_option(given: str, options: list[str]) -> str | None:
    """The option `given` (`--trainer.max_epoch=3`) was most likely meant to be."""
    close = difflib.get_close_matches(given.split("=")[0], options, n=1, cutoff=0.6)
    return close[0] if close else None


class ConciseArgumentParser(LightningArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        # argparse takes a prefix of an option for the option: `--trainer.max_epoch 3` (a typo)
        # silently set max_epochs. Subcommand parsers copy this setting from the main parser
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, ConciseArgumentParser] = {}

    def add_subcommands(self, *args: object, **kwargs: object) -> object:
        action = super().add_subcommands(*args, **kwargs)
        self.subcommands = action.choices  # filled as LightningCLI adds each subcommand's parser
        return action

    def parse_args(self, *args: object, **kwargs: object) -> Namespace:
        return parsed_with_notes(partial(super().parse_args, *args, **kwargs))

    def options(self) -> list[str]:
        """Every `--option` this parser or one of its subcommands sets, read from the keys of
        its defaults (jsonargparse's public view of them; argparse keeps its option strings in
        a private table). argparse itself suggests nothing for an unknown option
        (python/cpython#83287, declined)."""
        keys = self.get_defaults().keys(branches=True)
        found = [f"--{key}" for key in keys if not key.startswith("__")] + list(NO_DEFAULT)
        for parser in self.subcommands.values():
            found += [o for o in parser.options() if o not in found]
        return found

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # parsing inside jsonargparse that expects to catch this
            super().error(message, ex)
        text = one_line(message)
        if message.startswith("unrecognized arguments:"):
            unknown = [a for a in message.split()[2:] if a.startswith("--")]
            meant = [closest_option(a, self.options()) for a in unknown]
            if any(meant):
                text += f"; did you mean {', '.join(m for m in meant if m)}?"
        sys.stderr.write(f"error: {text} (options: python -m project fit --help)\n")
        self.exit(2)


def user_error_in(error: BaseException | None) -> BaseException | None:
    """The mistake behind `error`, if a user's: our `UserError`, Lightning's own verdict on a
    Trainer setting (`MisconfigurationException`), or a setting whose optional package is not
    installed (Lightning's "Requirement 'x' not met. HINT: …"). jsonargparse wraps what classes
    raise in `__init__`, so the whole chain is searched."""
    return next(filter(is_user_error, chain_of(error)), None)


def is_user_error(error: BaseException) -> bool:
    if isinstance(error, ModuleNotFoundError):
        return str(error).startswith("Requirement '")
    return isinstance(error, UserError | MisconfigurationException)
