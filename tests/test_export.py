from pathlib import Path

import pytest
import torch
from lightning import LightningModule

from project.export import main as export_main

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export needs the `export` extra")


def test_exports_match_the_checkpoint_for_any_batch_size(finished_run: Path) -> None:
    checkpoint = finished_run / "checkpoints" / "last.ckpt"
    export_main([str(checkpoint)])
    model = LightningModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    inputs = torch.randn(11, 40, 1)  # neither the traced batch size nor the checked one
    with torch.no_grad():
        expected = model(inputs)
    scripted = torch.jit.load(finished_run / "export" / "model.torchscript.pt")
    torch.testing.assert_close(scripted(inputs), expected, atol=1e-5, rtol=1e-4)
    session = onnxruntime.InferenceSession(finished_run / "export" / "model.onnx")
    (outputs,) = session.run(None, {"inputs": inputs.numpy()})
    torch.testing.assert_close(torch.from_numpy(outputs), expected, atol=1e-4, rtol=1e-3)


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:
        export_main([str(tmp_path / "nope.ckpt")])
    assert exit.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: checkpoint {tmp_path / 'nope.ckpt'} does not exist"
    )
