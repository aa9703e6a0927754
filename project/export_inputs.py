"""What `project.export` works from: a run's model rebuilt from its `config.yaml` and checkpoint,
an example batch of its data, and fresh inputs of other sizes to check the exported files on."""

import inspect
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning import LightningDataModule, LightningModule
from torch.export import Dim

from project.checkpoints import check_checkpoint, read_checkpoint
from project.errors import UserError

Inputs = tuple[torch.Tensor, ...]
EXAMPLE_SIZE = 4  # samples in the example batch (2 at least: torch.export fixes a batch of 1)


def read_config(path: Path) -> dict[str, Any]:
    """The run's `config.yaml`, which names the model's and the data's classes."""
    if not path.is_file():
        raise UserError(
            f"no config {path}: export rebuilds the model from its run's config.yaml;"
            " name the run's config with --config"
        )
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{path} names no model: give the config.yaml of the run")
    return config


def load_model(checkpoint_path: Path, config: dict[str, Any]) -> LightningModule:
    """The model of the class the run's config names, with the checkpoint's weights.

    The checkpoint is read weights-only and only its tensors and plain values are used: the
    class comes from the config (whose module is imported, as `fit` did), never from the
    checkpoint, so nothing the checkpoint carries decides what code runs.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    saved = checkpoint.get("hyper_parameters") or {}
    given = config["model"].get("init_args") or {}
    # the checkpoint's hyperparameters hold what the CLI linked from the data (input_size, …)
    arguments = {**given, **{k: v for k, v in saved.items() if not k.startswith("_")}}
    class_path = config["model"].get("class_path")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model", fail_untyped=False)
    spec = {"class_path": class_path, "init_args": arguments}
    try:
        model = parser.instantiate_classes(parser.parse_object({"model": spec})).model
    except Exception as error:  # jsonargparse: unknown class, not a LightningModule, bad args
        reason = " ".join(str(error).split())[:300]
        raise UserError(f"could not build the model {class_path} of the config: {reason}") from None
    check_checkpoint(checkpoint_path, model, checkpoint)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def data_batch(config: dict[str, Any]) -> tuple | list | torch.Tensor:
    """The first validation batch of the data the run's config names."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", fail_untyped=False)
    data = parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data
    data.prepare_data()
    data.setup("validate")
    return next(iter(data.val_dataloader()))


def forward_arity(model: LightningModule) -> int:
    """How many positional inputs `model.forward` takes at most."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 99
    return sum(p.kind in kinds for p in parameters)


def input_names(model: LightningModule, count: int) -> list[str]:
    """The names of forward's first `count` parameters (`inputs`, `lengths`): the ONNX inputs'."""
    names = list(inspect.signature(model.forward).parameters)
    return names[:count] if len(names) >= count else [f"input_{i}" for i in range(count)]


def example_inputs(model: LightningModule, config: dict[str, Any]) -> tuple[Inputs, str]:
    """The example the model is exported with, and where it comes from.

    The run's data first: its batches have the inputs' true dtype and carry `lengths` when the
    sequences are padded, so the exported model takes what a batch of that data gives `forward`
    (`inputs, lengths` for `(inputs, targets, lengths)` batches). Without data in the config,
    or data that cannot be loaded on this machine, the model's `example_input_array`.
    """
    problem = "the config names no data"
    if "data" in config:
        try:
            batch = data_batch(config)
        except Exception as error:  # no data files on this machine, no network to download …
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            problem = f"the run's data cannot be loaded here: {reason}"
        else:
            args = batch_inputs(batch, forward_arity(model))
            if args is not None:
                return args, f"a batch of {type_name(config['data'])}"
            problem = "the data's batches are not tuples of tensors"
    example = model.example_input_array
    if example is None:
        raise UserError(
            f"{problem}, and {type(model).__name__} sets no example_input_array to export with"
        )
    example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    return example, f"the model's example_input_array ({problem})"


def batch_inputs(batch: object, arity: int) -> Inputs | None:
    """What `forward` takes from a batch: `inputs` of `(inputs, targets, *more)` and as many of
    `more` (`lengths`) as it accepts; a few samples of each."""
    if isinstance(batch, torch.Tensor):
        batch = (batch,)
    if not isinstance(batch, tuple | list) or not all(isinstance(t, torch.Tensor) for t in batch):
        return None
    inputs, *rest = batch
    args = (inputs, *rest[1:])[: max(1, arity)]  # rest[0]: the targets
    return tuple(example_size(t) for t in args)


def type_name(section: dict[str, Any]) -> str:
    return str(section.get("class_path", "?")).rsplit(".", 1)[-1]


def example_size(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor[:EXAMPLE_SIZE]
    return tensor.repeat(2, *[1] * (tensor.dim() - 1)) if len(tensor) == 1 else tensor


def is_lengths(tensor: torch.Tensor) -> bool:
    return tensor.dim() == 1 and not tensor.is_floating_point()


def is_sequence(tensor: torch.Tensor) -> bool:
    """`(batch, time)` or `(batch, time, features)` floats: the time axis may be any length."""
    return tensor.is_floating_point() and tensor.dim() in (2, 3)


def dynamic_shapes(example: Inputs) -> tuple[dict[int, Any], ...]:
    """Every input's batch axis is dynamic; a sequence's time axis too where the model allows
    (`Dim.AUTO`: a model that fixes it, such as one with a linear layer over all steps, keeps
    the example's length, and the check tells)."""
    batch = Dim("batch", min=1)
    shapes = []
    for tensor in example:
        axes: dict[int, Any] = {0: batch} if len(tensor) == len(example[0]) else {}
        if tensor is example[0] and is_sequence(tensor):
            axes[1] = Dim.AUTO
        shapes.append(axes)
    return tuple(shapes)


def fresh_inputs(example: Inputs, batch: int, steps: int, seed: int) -> Inputs:
    """New random inputs shaped like `example` but with `batch` samples (and `steps` time steps
    for sequences), drawn within the example's range of values; lengths in 1..steps."""
    generator = torch.Generator().manual_seed(seed)
    fresh = []
    for tensor in example:
        shape = [batch, *tensor.shape[1:]] if len(tensor) == len(example[0]) else [*tensor.shape]
        if tensor is example[0] and is_sequence(tensor):
            shape[1] = steps
        if is_lengths(tensor) and len(shape) == 1:
            fresh.append(torch.randint(1, steps + 1, shape, generator=generator))
            continue
        low, high = tensor.min().item(), tensor.max().item()
        if tensor.is_floating_point():
            values = torch.rand(shape, generator=generator) * (high - low or 1.0) + low
        else:
            values = torch.randint(int(low), int(high) + 1, shape, generator=generator)
        fresh.append(values.to(tensor.dtype))
    return tuple(fresh)
