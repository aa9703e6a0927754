"""The catalogue of bad inputs: each is typed as a user would and must give one line saying what
was wrong, exit code 2, no traceback, and leave everything already on disk as it was."""

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from project.cli import main
from project.cli.setting_checks import RANGES
from tests.conftest import QUIET, SEQUENCE, cli, cli_process

GRU = SEQUENCE / "gru.yaml"
SIGNAL = SEQUENCE / "signal_frequency.yaml"


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one finished run (whose files must survive every bad input)."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli("fit", "-c", GRU, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", *QUIET)  # fmt: skip
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def npz(x: np.ndarray, y: np.ndarray) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        np.savez(folder / "data.npz", x=x, y=y)
        return ["fit", "-c", GRU, "--data", "SequenceFileDataModule", "--data.train",
                folder / "data.npz", "--data.num_classes", "4"]  # fmt: skip

    return make


def checkpoint(edit: Callable[[Path, Path], None], config: Path = GRU):
    def make(folder: Path) -> list[str]:
        last = folder / "logs/gru/version_0/checkpoints/last.ckpt"
        target = folder / "edited.ckpt"
        edit(last, target)
        return ["test", "-c", config, "--ckpt_path", target]

    return make


def truncated(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[:5000])


def renamed_keys(source: Path, target: Path) -> None:
    state = torch.load(source, weights_only=True)
    state["state_dict"] = {f"other.{k}": v for k, v in state["state_dict"].items()}
    torch.save(state, target)


class Payload:
    """Unpickling this would create a marker file: the proof that code ran."""

    def __reduce__(self):
        return (Path.touch, (Path("payload-ran"),))


def with_payload(source: Path, target: Path) -> None:
    state = torch.load(source, weights_only=True)
    state["extra"] = Payload()
    torch.save(state, target)


def plain(*args: str | Path) -> Callable[[Path], list]:
    return lambda folder: list(args)


CATALOGUE = {
    "unknown config key": (
        plain("fit", "-c", GRU, "--model.init_args.hiden_size", "3"),
        "Option 'hiden_size' is not accepted; accepted: input_size, num_outputs",
    ),
    "wrong value type": (
        plain("fit", "-c", GRU, "--model.init_args.hidden_size", "abc"),
        "Parser key \"hidden_size\": Expected a <class 'int'>. Got value: abc",
    ),
    "unknown model class": (
        plain("fit", "-c", GRU, "--model", "NoSuchModel"),
        "NoSuchModel",
    ),
    "missing config file": (plain("fit", "-c", "nope.yaml"), "File does not exist"),
    "unknown subcommand": (plain("trian", "-c", GRU), "invalid choice: 'trian'"),
    "missing data file": (
        plain("fit", "-c", GRU, "--data", "SequenceFileDataModule", "--data.train", "absent.npz"),
        "data file absent.npz does not exist (expected a .npz or .pt with x (samples",
    ),
    "empty dataset": (
        npz(np.zeros((0, 5)), np.zeros(0, dtype=int)),
        "data.npz holds no samples",
    ),
    "labels outside 0..num_classes-1": (
        npz(np.zeros((8, 5)), np.array([0, 1, 2, 3, 7, 0, 1, 2])),
        "labels must lie in 0..3, found 0..7",
    ),
    "sequence data of the wrong rank": (
        npz(np.zeros(8), np.zeros(8, dtype=int)),
        "data.npz: x has shape (8,), expected x (samples, time[, features])",
    ),
    "NaN in the data": (
        npz(np.full((8, 5), np.nan), np.zeros(8, dtype=int)),
        "data.npz: x holds NaN or infinite values",
    ),
    "data/model mismatch (classes)": (
        checkpoint(shutil.copy, config=SIGNAL),
        "does not fit this model: net.head.weight is (10, 128) there and (1, 128) here",
    ),
    "checkpoint that does not exist": (
        plain("test", "-c", GRU, "--ckpt_path", "nope.ckpt"),
        "checkpoint nope.ckpt does not exist",
    ),
    "corrupt checkpoint": (checkpoint(truncated), "is corrupt or not a PyTorch checkpoint"),
    "checkpoint of another model": (
        checkpoint(renamed_keys),
        "belongs to another model",
    ),
    "checkpoint that needs code to unpickle": (
        checkpoint(with_payload),
        "needs code to unpickle, refused",
    ),
    "batch_size <= 0": (
        plain("fit", "-c", GRU, "--data.init_args.batch_size", "0"),
        "data.batch_size must be a positive integer, got 0",
    ),
    "non-positive learning rate": (
        plain("fit", "-c", GRU, "--optimizer.lr", "-0.01"),
        "optimizer.init_args.lr must be > 0, got -0.01",
    ),
    "negative max_epochs": (
        plain("fit", "-c", GRU, "--trainer.max_epochs", "-5"),
        "`max_epochs` must be a non-negative integer or -1. You passed in -5.",
    ),
    "resume without a run's config": (
        plain("fit", "-c", GRU, "--ckpt_path", "last"),
        "--ckpt_path last needs a run's config: -c logs/<experiment>/version_N/config.yaml",
    ),
    "non-positive checkpoint interval": (
        plain("fit", "-c", GRU, "--last_checkpoint.every_n_train_steps", "0"),
        "last_checkpoint.every_n_train_steps must be > 0 or null, got 0",
    ),
    "setting whose package is not installed": (
        plain("fit", "-c", GRU, "--trainer.precision", "transformer-engine"),
        "Requirement 'transformer_engine",
    ),
    "unknown signal": (
        plain("fit", "-c", GRU, "--last_checkpoint.signals", "[SIGFOO]"),
        "unknown signal 'SIGFOO'",
    ),
    # argparse took a prefix of an option for the option: this trained 3 epochs
    "abbreviated option": (
        plain("fit", "-c", GRU, "--trainer.max_epoch", "3"),
        "unrecognized arguments: --trainer.max_epoch 3; did you mean --trainer.max_epochs?",
    ),
    "abbreviated option with =": (
        plain("fit", "-c", GRU, "--trainer.limit_train=2"),
        "did you mean --trainer.limit_train_batches?",
    ),
}

# a value Lightning accepts but that makes no sense, for each setting of
# project/cli/setting_checks.py
OUT_OF_RANGE = {
    "accumulate_grad_batches": "-2",  # trained the model backwards
    "min_epochs": "-1",
    "min_steps": "-1",
    "val_check_interval": "0",
    "check_val_every_n_epoch": "0",
    "log_every_n_steps": "-1",
    "gradient_clip_val": "-1",
    "num_sanity_val_steps": "-2",
    "num_nodes": "0",
}
for name, value in OUT_OF_RANGE.items():
    CATALOGUE[f"trainer.{name} {value}"] = (
        plain("fit", "-c", GRU, f"--trainer.{name}", value),
        f"trainer.{name} must be {RANGES[name][1]}, got {value}",
    )


def test_every_checked_setting_has_a_bad_input() -> None:
    assert set(OUT_OF_RANGE) == set(RANGES)


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.replace(" ", "-"))
def test_bad_input_is_one_line_and_harmless(
    case: str, place: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    make_args, expected = CATALOGUE[case]
    monkeypatch.chdir(place)
    args = [str(a) for a in make_args(place)]
    before = snapshot(place / "logs")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert snapshot(place / "logs") == before
    assert not (place / "payload-ran").exists()


@pytest.mark.slow
def test_a_real_process_prints_only_the_line(place: Path) -> None:
    """In-process runs above share the test process; this one is exactly what a user sees."""
    result = cli_process("test", "-c", GRU, "--ckpt_path", "nope.ckpt", cwd=place)
    assert result.returncode == 2
    assert result.stderr == "error: checkpoint nope.ckpt does not exist\n"
