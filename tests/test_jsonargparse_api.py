"""What this project reads from jsonargparse beyond its documented API, checked against the
installed release on a parser of its own: the wording of the errors `project/cli/errors.py` turns
into one line, and the private function `project/cli/carried_settings.py` wraps. A release that
changes either fails here, in a second, naming what changed; pyproject.toml caps jsonargparse
below the next minor release so that none arrives untested."""

import inspect
from argparse import ArgumentError

import pytest
from jsonargparse import ArgumentParser
from jsonargparse import _typehints as typehints

from project.cli import main
from project.cli.carried_settings import DISCARD, noting_carried_settings
from project.cli.errors import NOISE, ConciseArgumentParser, closest_option, one_line
from tests.conftest import SEQUENCE


class Shape:
    pass


class Small(Shape):
    def __init__(self, size: int = 1, colour: str = "red") -> None:
        self.size, self.colour = size, colour


class Large(Shape):
    def __init__(self, size: int = 9) -> None:
        self.size = size


SMALL, LARGE = f"{__name__}.Small", f"{__name__}.Large"


def parse(*args: str) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--shape", type=Shape | None)  # as LightningCLI adds `model` and `data`
    parser.add_argument("--count", type=int, default=0)
    parser.parse_args(list(args))


def error_of(*args: str) -> str:
    with pytest.raises(ArgumentError) as caught:
        parse(*args)
    return str(caught.value)


def test_an_unknown_setting_of_a_class_is_one_line_naming_those_accepted() -> None:
    raw = error_of("--shape", SMALL, "--shape.init_args.sise", "3")
    lines = [line.strip() for line in raw.splitlines()]
    for noise in NOISE:  # each line dropped is still printed, word for word
        assert any(line.startswith(noise) for line in lines), (noise, raw)
    assert one_line(raw) == (
        f"Parser key \"shape\": Problem with given class_path '{SMALL}': "
        "Option 'sise' is not accepted; accepted: size, colour"
    )


def test_a_value_of_the_wrong_type_is_one_line() -> None:
    raw = error_of("--shape", SMALL, "--shape.init_args.size", "abc")
    assert one_line(raw) == (
        f"Parser key \"shape\": Problem with given class_path '{SMALL}': "
        "Parser key \"size\": Expected a <class 'int'>. Got value: abc"
    )


def test_an_unknown_option_is_reported_with_its_value() -> None:
    # errors.py reads the options after this prefix to suggest the one meant
    assert error_of("--cuont", "3") == "unrecognized arguments: --cuont 3"


def test_every_option_is_suggested_back_with_its_last_letter_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The options suggested come from the parsers' defaults (public), not argparse's private
    table: each one `fit` accepts, typed one letter short, is the one suggested."""
    seen: list[list[str]] = []

    def error(parser: ConciseArgumentParser, message: str, ex: Exception | None = None) -> None:
        seen.append(parser.options())
        raise SystemExit(2)

    monkeypatch.setattr(ConciseArgumentParser, "error", error)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(SEQUENCE / "gru.yaml"), "--no_such_option"])
    (options,) = seen
    assert {"--trainer.max_epochs", "--data", "--ckpt_path", "--print_config"} <= set(options)
    assert len(options) > 50
    for option in options:
        assert closest_option(option[:-1], options) == option


def test_the_wrapped_function_keeps_its_name_and_parameters() -> None:
    assert DISCARD is typehints.discard_init_args_on_class_path_change
    parameters = inspect.signature(DISCARD).parameters
    assert list(parameters) == ["parser_or_action", "prev_val", "value"]


def test_a_class_switch_goes_through_the_wrapped_function() -> None:
    """jsonargparse decides what a switched class keeps in that function: the note gets the
    kept setting (`size`), not the one the new class does not accept (`colour`)."""
    with noting_carried_settings() as switches:
        parse("--shape", SMALL, "--shape.init_args.size", "3", "--shape.init_args.colour",
              "blue", "--shape", LARGE)  # fmt: skip
    assert switches == [(SMALL, LARGE, {"size": 3})]
    assert typehints.discard_init_args_on_class_path_change is DISCARD  # put back
