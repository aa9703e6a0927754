"""A class switched on the command line or by a later config file keeps the settings the class
before it was given (jsonargparse's choice): the run says which, once, as it starts."""

from pathlib import Path

import pytest

from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli

SMALL_CNN = CONFIGS / "image" / "small_cnn.yaml"
FAST = ["-c", CONFIGS / "debug" / "fast_dev_run.yaml", *QUIET]
SWITCHES = {
    "data on the command line": (
        ["-c", SMALL_CNN, "--data.classes", "[1,2]", "--data", "MNIST1DImagesDataModule"],
        "data.init_args batch_size, classes carried over from DigitsDataModule to "
        "MNIST1DImagesDataModule",
    ),
    "optimizer on the command line": (
        ["-c", SEQUENCE / "gru.yaml", "--optimizer", "SGD"],
        "optimizer.init_args lr carried over from Adam to SGD",
    ),
    "data in a later config file": (
        ["-c", SEQUENCE / "gru.yaml", "-c", "other_data.yaml"],
        "data.init_args batch_size carried over from MNIST1DDataModule to "
        "SignalFrequencyDataModule",
    ),
}


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: s.replace(" ", "-"))
def test_a_switched_class_names_what_it_kept_once(
    switch: str, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    (workdir / "other_data.yaml").write_text("data:\n  class_path: SignalFrequencyDataModule\n")
    args, note = SWITCHES[switch]
    # validate and test after the fit set up the trainer twice more: still said once
    cli("fit", *args, *FAST, "--test_after_fit", "true")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {note}"]


def test_no_switch_no_note(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    cli("fit", "-c", SEQUENCE / "gru.yaml", "--data.batch_size", "50", *FAST)
    assert "note:" not in capsys.readouterr().err
