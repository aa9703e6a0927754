"""The networks an image model trains: a torchvision classification model (or a small CNN) built
by name with a fresh head, and pretrained weights copied into everything but that head."""

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torchvision.models import get_model

from project.errors import UserError
from project.weights import torchvision_backbones

SMALL_CNN = "small_cnn"
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, BATCH_NORMS)


class SmallCNN(nn.Module):
    """Conv2d → ReLU → MaxPool2d → Dropout → Linear: the from-scratch baseline."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: tuple[int, int] = (8, 8),
        channels: int = 32,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
            nn.Flatten(),
        )
        height, width = image_size
        self.head = nn.Linear(channels * (height // 2) * (width // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_network(
    backbone: str, num_classes: int, input_size: tuple[int, int, int], pretrained: bool
) -> nn.Module:
    """The network with a fresh `num_classes` head, its other weights randomly initialised."""
    if backbone == SMALL_CNN:
        return SmallCNN(num_classes, input_size[0], input_size[1:])
    if backbone not in torchvision_backbones():
        raise UserError(
            f"unknown backbone {backbone!r}: use {SMALL_CNN} or a torchvision classification model"
            " such as resnet18, resnet50, vgg16, vgg16_bn, inception_v3"
            " (all names: torchvision.models.list_models(module=torchvision.models))"
        )
    options = {}
    if backbone in ("inception_v3", "googlenet"):
        # what torchvision's own builders set with pretrained weights: the ported Google weights
        # expect inputs in [-1, 1], so `transform_input` maps ImageNet-normalised inputs there
        options = {"init_weights": True, "aux_logits": True, "transform_input": pretrained}
    return get_model(backbone, weights=None, num_classes=num_classes, **options)


def head_keys(build: Callable[[int], nn.Module]) -> set[str]:
    """The state_dict keys of the classification head(s): those whose shape follows num_classes.

    Building the network twice on the meta device (no memory, no init cost) finds them for any
    family: `fc` for ResNets, `classifier.6` for VGGs, `fc` and `AuxLogits.fc` for Inception v3.
    """
    with torch.device("meta"):
        two, three = build(2).state_dict(), build(3).state_dict()
    return {key for key, value in two.items() if value.shape != three[key].shape}


def few(keys: Iterable[str], shown: int = 3) -> str:
    keys = sorted(keys)
    more = f", … ({len(keys)} in all)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_backbone(
    net: nn.Module, state: dict[str, torch.Tensor], head: set[str], source: str
) -> None:
    """Copies every non-head tensor of `state` into `net`; the head stays freshly initialised."""
    own = net.state_dict()
    given = {key: value for key, value in state.items() if key not in head}
    problems = []
    wrong = [
        f"{key} {tuple(value.shape)} where the model has {tuple(own[key].shape)}"
        for key, value in sorted(given.items())
        if key in own and value.shape != own[key].shape
    ]
    if wrong:
        problems.append(f"wrong shapes: {few(wrong, 2)}")
    # files saved before BatchNorm counted its batches lack `num_batches_tracked`, a counter
    # that only matters for momentum=None; torchvision's own ImageNet files are such files
    missing = {k for k in own.keys() - given.keys() - head if not k.endswith("num_batches_tracked")}
    unexpected = given.keys() - own.keys()
    if missing:
        problems.append(f"missing: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected: {few(unexpected)}")
    if problems:
        raise UserError(f"weights {source} do not fit this backbone: {'; '.join(problems)}")
    net.load_state_dict(given, strict=False)
