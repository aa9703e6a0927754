"""Exports a run's checkpoint for serving: `python -m project.export CKPT`.

- `model.pt2`: a `torch.export` ExportedProgram (`torch.export.load(path).module()(inputs)`);
- `model.onnx`: the same program through torch's dynamo ONNX exporter (the `export` extra:
  `pip install -e '.[export]'`), for ONNX Runtime;
- `model.torchscript.pt`: only with `--to torchscript` (TorchScript is deprecated in torch).

The files land in `<run>/export/` (or `--out`). They take a batch of any size, and sequences of
any length where the model allows. The model is rebuilt from the run's `config.yaml` (its class,
imported from its module) and the checkpoint's weights; the example batch comes from the run's
data. Each file is checked against the checkpoint on fresh inputs of other batch sizes and
lengths before the command reports the largest difference seen.
"""

import argparse
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning import LightningModule
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from project.errors import UserError
from project.export_inputs import (
    Inputs,
    dynamic_shapes,
    example_inputs,
    fresh_inputs,
    input_names,
    is_sequence,
    load_model,
    read_config,
)
from project.runs import CONFIG, beside_checkpoint

FILES = {"pt2": "model.pt2", "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
# a difference above this share of the outputs' scale is an export that does not match
TOLERANCE = 1e-4


@dataclass
class Exported:
    format: str
    path: Path
    max_difference: float
    largest_output: float  # the largest |output| of the checkpoint on the same inputs
    checked: str  # the fresh inputs' sizes: "1×17, 5×49, 3×40 steps" or "batches of 1, 5, 3"
    dynamic: str  # "batch and time", "batch"
    problem: str | None = None  # why the file was not written


def first_tensor(output: object) -> torch.Tensor:
    """A model's output, or the first of several (a tuple's, the first tensor in it)."""
    return output if isinstance(output, torch.Tensor) else first_tensor(output[0])  # type: ignore[index]


def probes(example: Inputs, dynamic_time: bool) -> list[Inputs]:
    """Fresh inputs: batches of 1, 5 and 3, with lengths other than the example's when dynamic."""
    steps = example[0].shape[1] if is_sequence(example[0]) else 1
    lengths = [max(2, steps // 2 - 3), steps + 9, steps] if dynamic_time else [steps] * 3
    shapes = zip((1, 5, 3), lengths, strict=True)
    return [fresh_inputs(example, b, t, seed) for seed, (b, t) in enumerate(shapes)]


def sizes(inputs: list[Inputs], dynamic_time: bool) -> str:
    if dynamic_time:
        return ", ".join(f"{len(x[0])}×{x[0].shape[1]}" for x in inputs) + " steps"
    return "batches of " + ", ".join(str(len(x[0])) for x in inputs)


def max_difference(
    model: LightningModule, run: Callable[[Inputs], torch.Tensor], inputs: list[Inputs]
) -> tuple[float, float]:
    """The largest absolute difference between `run` and the checkpoint's model on `inputs`,
    and the largest absolute output of the checkpoint's model (the scale it compares to)."""
    worst, largest = 0.0, 0.0
    for args in inputs:
        with torch.no_grad():
            expected = first_tensor(model(*args))
        got = first_tensor(run(args)).to(expected.dtype)
        if got.shape != expected.shape:
            raise UserError(
                f"it gives {tuple(got.shape)} where the checkpoint gives"
                f" {tuple(expected.shape)} on inputs {[tuple(a.shape) for a in args]}"
            )
        difference = (got - expected).abs().max().item()
        worst, largest = max(worst, difference), max(largest, expected.abs().max().item())
        if not difference <= TOLERANCE * max(1.0, expected.abs().max().item()):
            raise UserError(
                f"it differs from the checkpoint by {difference:.2g} on inputs"
                f" {[tuple(a.shape) for a in args]}"
            )
    return worst, largest


def export_program(model: LightningModule, example: Inputs) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return torch.export.export(model, example, dynamic_shapes=dynamic_shapes(example))
    except Exception as error:  # torch's own errors are pages long; their first line says what
        reason = next((line for line in str(error).splitlines() if line.strip()), "")
        raise UserError(
            f"torch.export cannot trace {type(model).__name__}: {type(error).__name__}: {reason}"
            " (TORCH_LOGS=+dynamic python -m project.export … shows where)"
        ) from None


def dynamic_axes(program: torch.export.ExportedProgram) -> tuple[bool, bool]:
    """Whether the first input's batch and (for sequences) time axes stayed dynamic."""
    first = next(
        n
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name in program.graph_signature.user_inputs
    )
    # an axis that `Dim.AUTO` let the model fix is a SymInt too, but one with a concrete value
    dynamic = [not is_concrete_int(size) for size in first.meta["val"].shape]
    return dynamic[0], len(dynamic) > 1 and dynamic[1]


def write_pt2(program: torch.export.ExportedProgram, path: Path) -> Callable:
    torch.export.save(program, path)
    # reading a program back warns about each size symbol it does not need ("Symbol u0 did
    # not appear in the graph"): noise about the loop's internal counters
    logging.getLogger("torch._export.serde.serialize").setLevel(logging.ERROR)
    loaded = torch.export.load(path).module()
    return lambda args: loaded(*args)


def write_onnx(program: torch.export.ExportedProgram, path: Path, names: list[str]) -> Callable:
    try:
        import onnxruntime
    except ImportError:
        raise UserError("ONNX export needs the extra: pip install -e '.[export]'") from None
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=names, verbose=False)
    onnx_program.save(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]  # an input the graph ignores is left out

    def run(args: Inputs) -> torch.Tensor:
        feed = {n: a.numpy() for n, a in zip(names, args, strict=True) if n in wanted}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


def write_torchscript(model: LightningModule, example: Inputs, path: Path) -> Callable:
    # asked for by name: one note instead of a deprecation warning from each jit call
    print("note: TorchScript is deprecated in torch; model.pt2 (torch.export) replaces it")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # Lightning's tracing keeps jit away from its `trainer` property
        torch.jit.save(model.to_torchscript(method="trace", example_inputs=example), path)
        loaded = torch.jit.load(path)
    return lambda args: loaded(*args)


def export(
    checkpoint: Path, out: Path, formats: list[str], config: Path | None = None
) -> list[Exported]:
    """Writes the checkpoint in each of `formats` into `out`, each checked on fresh inputs."""
    config_path = config or beside_checkpoint(checkpoint) / CONFIG
    run_config = read_config(config_path)
    model = load_model(checkpoint, run_config)
    example, source = example_inputs(model, run_config)
    names = input_names(model, len(example))
    print(
        f"example: {source}: "
        + ", ".join(
            f"{n} {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
            for n, t in zip(names, example, strict=True)
        )
    )
    program = export_program(model, example)
    dynamic_batch, dynamic_time = dynamic_axes(program)
    dynamic = " and ".join(["batch"] * dynamic_batch + ["time"] * dynamic_time) or "no"
    inputs = probes(example, dynamic_time)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for format in formats:
        path = out / FILES[format]
        result = Exported(format, path, *[float("nan")] * 2, sizes(inputs, dynamic_time), dynamic)
        try:
            if format == "pt2":
                run = write_pt2(program, path)
            elif format == "onnx":
                run = write_onnx(program, path, names)
            else:
                run = write_torchscript(model, example, path)
            result.max_difference, result.largest_output = max_difference(model, run, inputs)
        except Exception as error:  # one format failing leaves the others written
            path.unlink(missing_ok=True)  # a file that does not match is not left behind
            result.problem = one_line(error)
        results.append(result)
    return results


def one_line(error: Exception) -> str:
    if isinstance(error, UserError):
        return str(error)
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first.strip()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m project.export", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by a run")
    parser.add_argument("--to", nargs="+", choices=list(FILES), default=["pt2", "onnx"])
    parser.add_argument("--out", type=Path, help="folder for the files (default: <run>/export)")
    parser.add_argument("--config", type=Path, help="the run's config (default: <run>/config.yaml)")
    args = parser.parse_args(argv)
    ckpt: Path = args.checkpoint
    out = args.out or beside_checkpoint(ckpt) / "export"
    try:
        if not ckpt.is_file():
            raise UserError(f"checkpoint {ckpt} does not exist")
        results = export(ckpt, out, args.to, args.config)
        for file in results:
            if file.problem is None:
                print(
                    f"wrote {file.path} ({file.dynamic} dynamic): largest difference from the"
                    f" checkpoint {file.max_difference:.1e} on fresh inputs ({file.checked})"
                )
        failed = [
            f"{file.path.name} not written: {file.problem}" for file in results if file.problem
        ]
        if failed:
            raise UserError("; ".join(failed))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
