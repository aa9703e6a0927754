"""Where weights come from: torchvision's by name, a local file, or a checkpoint, each read by the
one weights-only `torch.load` of this template (shared with `--ckpt_path`'s checks)."""

import re
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import transforms
from torchvision.models import WeightsEnum, get_model_weights, list_models
from torchvision.transforms import v2

from project.errors import UserError

WEIGHT_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}


def load_weights_only(path: Path, what: str = "weights file") -> object:
    """What `torch.load` reads from `path`, on the CPU, or a one-line `UserError` naming it as
    `what` ("weights file", "checkpoint").

    `weights_only=True` lets torch.load build tensors and plain containers only: a file whose
    unpickling would call anything else is refused before any of its code runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, EOFError, RuntimeError from a zip reader, …
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # "…unsupported GLOBAL posix.system whose…", "Unsupported global: GLOBAL getattr was…"
        code = next((m.group() for m in map(re.compile(r"GLOBAL \S+").search, lines) if m), None)
        if code:
            raise UserError(
                f"{what} {path} needs code to unpickle, refused: loading it would run code"
                f" ({code}); only tensors and plain values are loaded (save a state_dict:"
                " torch.save(model.state_dict(), path))"
            ) from None
        # torch's long explanation comes first; the reason ("Unsupported operand 110") last
        reason = next((line for line in lines if line.startswith("Unsupported")), None)
        reason = reason or (lines[0][:120] if lines else type(error).__name__)
        raise UserError(f"{what} {path} is corrupt or not a PyTorch {what} ({reason})") from None


def torchvision_backbones() -> list[str]:
    """The classification models torchvision builds by name: resnet18, vgg16_bn, inception_v3, …"""
    return list_models(module=torchvision.models)


def torchvision_weights(backbone: str, name: str) -> WeightsEnum:
    """`DEFAULT`, `IMAGENET1K_V1`, … (or `ResNet18_Weights.IMAGENET1K_V1`) for this backbone."""
    if backbone not in torchvision_backbones():
        raise UserError(f"{backbone} has no torchvision weights: weights must be a file or null")
    available = get_model_weights(backbone)
    name = name.rsplit(".", 1)[-1]
    if name == "DEFAULT":
        return available.DEFAULT
    if name not in available.__members__:
        choices = ", ".join(["DEFAULT", *available.__members__])
        raise UserError(
            f"{backbone} has no weights {name!r}: use one of {choices}, a file path or null"
        )
    return available[name]


def weights_source(weights: str, backbone: str) -> Path | WeightsEnum:
    """A local file when `weights` names one, else the backbone's torchvision weights."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if "/" in weights or path.suffix in WEIGHT_FILE_SUFFIXES:
        raise UserError(f"weights file {weights} not found")
    return torchvision_weights(backbone, weights)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a plain weights file or from one of this template's checkpoints."""
    loaded = load_weights_only(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a Lightning checkpoint
    if not isinstance(loaded, dict) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise UserError(
            f"weights file {path} holds neither a state_dict nor a Lightning checkpoint"
        )
    if any(key.startswith("net.") for key in loaded):
        # a LightningModule's state (this template's checkpoints): the network sits under `net.`
        loaded = {k.removeprefix("net."): v for k, v in loaded.items() if k.startswith("net.")}
    return loaded


def read_state(source: Path | WeightsEnum) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, or of torchvision weights (downloaded once, then cached)."""
    if isinstance(source, Path):
        return read_weights_file(source)
    try:
        return source.get_state_dict(progress=False, check_hash=True)
    except OSError as error:  # no network: urllib's URLError is an OSError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(source.url).name
        reason = " ".join(str(error).split())
        raise UserError(
            f"could not download {source} ({reason}): without network, fetch {source.url}"
            f" elsewhere and put it at {cache}, or pass its path as weights"
        ) from None


def preprocessing(
    backbone: str, source: Path | WeightsEnum | None, image_size: int | None
) -> torch.nn.Module:
    """The weights' own `transforms()` (resize, center crop, normalisation): those of the named
    torchvision weights, else the backbone's DEFAULT ones (training from scratch or a file)."""
    reference = source if isinstance(source, WeightsEnum) else get_model_weights(backbone).DEFAULT
    sizes = {"crop_size": image_size, "resize_size": image_size} if image_size else {}
    preset = reference.transforms(**sizes)
    steps = ("resize_size", "interpolation", "antialias", "crop_size", "mean", "std")
    if not all(hasattr(preset, step) for step in steps):  # not a classification preset
        return preset
    # the preset's own steps, but v2's Normalize: the preset's asks `(std == 0).any()` of a
    # tensor, which torch.export cannot trace (v2 checks the numbers it was given); v1's resize
    # and crop, which TorchScript's trace follows (v2's crop rounds a traced size and fails)
    return nn.Sequential(
        transforms.Resize(preset.resize_size, preset.interpolation, antialias=preset.antialias),
        transforms.CenterCrop(preset.crop_size),
        v2.Normalize(preset.mean, preset.std),
    )
