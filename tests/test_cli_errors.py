"""Mistakes a user types get one line naming the key, and exit code 2."""

from pathlib import Path

import pytest

from tests.conftest import CONFIGS, cli_process

GRU = CONFIGS / "gru.yaml"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.init_args.hiden_size", "3"], "Option 'hiden_size' is not accepted; accepted:"),
        (["--model.init_args.hidden_size", "abc"], "key \"hidden_size\": Expected a <class 'int'>"),
        (["--data.init_args.batch_size", "0"], "data.batch_size must be a positive integer, got 0"),
    ],
    ids=["unknown-key", "wrong-type", "bad-value"],
)
def test_bad_flag_is_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = cli_process("fit", "-c", GRU, *args, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line
    assert not (tmp_path / "logs").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = cli_process("fit", "-c", tmp_path / "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and len(result.stderr.strip().splitlines()) == 1
