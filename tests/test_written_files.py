"""A run writes into `logs/` and nowhere else in the folder it is started from."""

from pathlib import Path

import pytest

from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli

DEBUG_OVERLAYS = sorted((CONFIGS / "debug").glob("*.yaml"))


def written_outside_logs(folder: Path) -> list[str]:
    files = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(str(p) for p in files if p.parts[0] != "logs")


@pytest.mark.parametrize("overlay", DEBUG_OVERLAYS, ids=lambda p: p.stem)
def test_debug_overlay_writes_only_into_logs(overlay: Path, workdir: Path) -> None:
    # one epoch: where files go does not depend on how long the overlay trains
    cli("fit", "-c", SEQUENCE / "gru.yaml", "-c", overlay, "--trainer.max_epochs", "1", *QUIET)
    assert written_outside_logs(workdir) == []
    if overlay.stem == "fast_dev_run":  # a smoke test: no checkpoint at all (README)
        assert list(workdir.rglob("*.ckpt")) == []
