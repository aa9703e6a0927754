"""Exports a checkpoint to TorchScript and ONNX: `python -m project.export CKPT`.

Both files land in `<run>/export/` (or `--out`), take a batch of any size, and are checked
against the checkpoint on fresh random inputs before the command reports success. ONNX needs
the `export` extra: `pip install -e '.[export]'`.
"""

import argparse
import sys
from pathlib import Path

import torch
from lightning import LightningModule

from project.errors import UserError
from project.runs import beside_checkpoint


def load_checkpoint(path: Path) -> LightningModule:
    import project.models  # noqa: F401  (the checkpoint names its class; it must be importable)

    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    model = LightningModule.load_from_checkpoint(path, map_location="cpu")
    if model.example_input_array is None:
        raise UserError(f"{type(model).__name__} sets no example_input_array to export with")
    return model.eval()


def fresh_inputs(model: LightningModule, batch: int) -> torch.Tensor:
    example = model.example_input_array
    return torch.randn(batch, *example.shape[1:], generator=torch.Generator().manual_seed(batch))


def export(checkpoint: Path, out: Path, formats: list[str]) -> list[Path]:
    model = load_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    probe = fresh_inputs(model, 5)  # another batch size than the traced one
    with torch.no_grad():
        expected = model(probe)
    if "torchscript" in formats:
        path = out / "model.torchscript.pt"
        scripted = model.to_torchscript(method="trace", example_inputs=model.example_input_array)
        torch.jit.save(scripted, path)
        got = torch.jit.load(path)(probe)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        written.append(path)
    if "onnx" in formats:
        try:
            import onnxruntime
        except ImportError:
            raise UserError("ONNX export needs the extra: pip install -e '.[export]'") from None
        path = out / "model.onnx"
        model.to_onnx(
            path,
            model.example_input_array,
            input_names=["inputs"],
            output_names=["outputs"],
            dynamic_axes={"inputs": {0: "batch"}, "outputs": {0: "batch"}},
            dynamo=False,  # the TorchScript-based exporter handles RNNs with a dynamic batch
        )
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"inputs": probe.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m project.export", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by a run")
    parser.add_argument(
        "--to", nargs="+", choices=["torchscript", "onnx"], default=["torchscript", "onnx"]
    )
    parser.add_argument("--out", type=Path, help="folder for the files (default: <run>/export)")
    args = parser.parse_args(argv)
    ckpt: Path = args.checkpoint
    out = args.out or beside_checkpoint(ckpt) / "export"
    try:
        for path in export(ckpt, out, args.to):
            print(f"wrote {path} (matches the checkpoint on a fresh batch of 5)")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
