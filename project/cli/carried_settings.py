"""Says which settings a switched class kept from the class it replaced.

`-c configs/image/small_cnn.yaml --data MNIST1DImagesDataModule` gives the new class every
`data.init_args` setting the first one was given that it also accepts (`classes`, `batch_size`):
jsonargparse does it on purpose, so that a switch keeps what the user set, but silently; it logs
only what it drops, at debug level, and offers no hook. `noting_carried_settings` wraps the one
function where it decides, while the command line is parsed, and keeps a note of each switch that
kept something; `ProjectCLI` prints the notes once the model, data and Trainer are built, so
that a mistake found before then is still the one line of its error.

The function is private (`jsonargparse._typehints`): pyproject.toml caps jsonargparse below the
next minor release, and tests/test_jsonargparse_api.py fails when a release renames the function,
changes its parameters or stops calling it on a switch. Upstream:
https://github.com/Lightning-AI/pytorch-lightning/issues/8916 (settings carried over silently;
closed as won't fix, no hook) and https://github.com/mauvilsa/jsonargparse/issues/460 (open: a
switched class keeps the previous class's defaults).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jsonargparse import Namespace
from jsonargparse import _typehints as typehints

NOTES: list[str] = []  # of the latest parse; printed and emptied by `ProjectCLI.print_notes`

DISCARD = typehints.discard_init_args_on_class_path_change


def short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def setting_names(init_args: object) -> list[str]:
    if isinstance(init_args, Namespace):
        return [key for key, _ in init_args.items(branches=True, nested=False)]
    return list(init_args) if isinstance(init_args, dict) else []


@contextmanager
def noting_carried_settings() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """Yields a list that gets (old class, new class, {setting: value kept}) for each switch."""
    switches: list[tuple[str, str, dict[str, Any]]] = []

    def discard_and_note(parser_or_action: object, prev_val: Any, value: Any) -> None:
        DISCARD(parser_or_action, prev_val, value)  # drops what the new class does not accept
        if not prev_val or not value or "init_args" not in prev_val:
            return
        old, new = prev_val.get("class_path"), value.get("class_path")
        if old and new and old != new:
            given_anew = setting_names(value.get("init_args"))
            kept = {
                name: prev_val["init_args"][name]
                for name in setting_names(prev_val["init_args"])
                if name not in given_anew
            }
            if kept:
                switches.append((old, new, kept))

    typehints.discard_init_args_on_class_path_change = discard_and_note
    try:
        yield switches
    finally:
        typehints.discard_init_args_on_class_path_change = DISCARD


def carried_notes(switches: list[tuple[str, str, dict[str, Any]]], config: Namespace) -> list[str]:
    """One line per switch whose kept settings reached the parsed `config`, e.g.
    `data.init_args classes, batch_size carried over from DigitsDataModule to …`."""
    subcommand = config.get("subcommand")
    specs = {  # where each class ended up: {"data": Namespace(class_path=..., init_args=...)}
        key.removeprefix(f"{subcommand}."): value
        for key, value in config.items(branches=True)
        if isinstance(value, Namespace) and isinstance(value.get("class_path"), str)
    }
    notes = []
    for old, new, kept in switches:
        # the shortest key: `optimizer`, not `model.init_args.optimizer` that it is linked to
        for key, spec in sorted(specs.items(), key=lambda item: item[0].count(".")):
            init_args = spec.get("init_args") or Namespace()
            names = [n for n in kept if spec.class_path == new and init_args.get(n) == kept[n]]
            if names:
                notes.append(
                    f"{key}.init_args {', '.join(names)} carried over from {short(old)} to "
                    f"{short(new)}"
                )
                break
    return list(dict.fromkeys(notes))  # jsonargparse may decide on one switch twice


def parsed_with_notes(parse: Callable[[], Namespace]) -> Namespace:
    """`parse()`, with `NOTES` set to the settings its class switches carried over."""
    if typehints.discard_init_args_on_class_path_change is not DISCARD:  # a parse within one
        return parse()
    with noting_carried_settings() as switches:
        config = parse()
    NOTES[:] = carried_notes(switches, config)
    return config
