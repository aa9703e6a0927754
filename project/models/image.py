"""Image classifiers: a torchvision classification backbone (or a small CNN) fine-tuned by name."""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import torch
import torchvision
from lightning import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import to_dtype

from project.errors import UserError
from project.figures import prediction_grid
from project.finetuning import BackboneFreeze, is_batch_norm
from project.models.supervised import SupervisedModule
from project.task import Task

SMALL_CNN = "small_cnn"
WEIGHT_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}
SAMPLES_SHOWN = 16  # images in TensorBoard's `val/predictions` and `test/predictions` grids


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


def torchvision_backbones() -> list[str]:
    """The classification models torchvision builds by name: resnet18, vgg16_bn, inception_v3, …"""
    return list_models(module=torchvision.models)


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


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a plain weights file or from one of this template's checkpoints.

    `weights_only=True` lets torch.load build tensors and plain containers only: a file whose
    unpickling would call anything else is refused before any of its code runs.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, EOFError, RuntimeError from a zip reader, …
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        code = [line for line in lines if "GLOBAL" in line]  # "…unsupported GLOBAL posix.system…"
        if code:
            raise UserError(
                f"weights file {path} was refused: loading it would run code ({code[0]});"
                " save plain tensors with torch.save(model.state_dict(), path)"
            ) from None
        # torch's long explanation comes first; the reason ("Unsupported operand 110") last
        reason = next((line for line in lines if line.startswith("Unsupported")), None)
        reason = reason or (lines[0][:120] if lines else type(error).__name__)
        raise UserError(f"weights file {path} is not a PyTorch weights file ({reason})") from None
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


def weights_source(weights: str, backbone: str) -> Path | WeightsEnum:
    """A local file when `weights` names one, else the backbone's torchvision weights."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if "/" in weights or path.suffix in WEIGHT_FILE_SUFFIXES:
        raise UserError(f"weights file {weights} not found")
    return torchvision_weights(backbone, weights)


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


class ImageClassifier(SupervisedModule):
    """Fine-tunes a torchvision classification backbone (or `small_cnn`) chosen by name.

    Inputs are images `(batch, channels, height, width)`, uint8 or floats in [0, 1]. The model
    turns them into what the network expects: grey images repeated to 3 channels for torchvision
    backbones, then the weights' own `transforms()` (resize, center crop, normalisation), so a
    checkpoint carries its preprocessing and the data never repeats it.
    """

    def __init__(
        self,
        num_outputs: int,
        input_size: tuple[int, int, int],
        task: Task = "classification",
        backbone: str = "resnet18",
        weights: str | None = None,
        image_size: int | None = None,
        freeze: Literal["none", "backbone"] = "none",
        unfreeze_at_epoch: int | None = None,
        bn_eval: bool = True,
        backbone_lr_factor: float = 1.0,
        aux_loss_weight: float = 0.4,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        decay_norms_and_biases: bool = True,
    ) -> None:
        """
        Args:
            input_size: `(channels, height, width)` of the data's images (linked from the data).
            backbone: `small_cnn` or a torchvision model name: resnet18 … resnet152, vgg11 … vgg19
                (and `_bn`), inception_v3, or any other `torchvision.models.list_models()` name.
            weights: null (random init); torchvision weights of the backbone (`DEFAULT`,
                `IMAGENET1K_V1`, …, downloaded once into torch's hub cache); or a file: a
                state_dict or a checkpoint of this template. The head is always new.
            image_size: side the network sees; default: the crop size of the weights'
                `transforms()` (224 for ResNets, 299 for Inception), the data's size for small_cnn.
            freeze: `backbone` trains only the head (see `BackboneFreeze`).
            unfreeze_at_epoch: with `freeze: backbone`, train the backbone too from this epoch.
            bn_eval: while the backbone is frozen, its BatchNorm layers normalise with their
                stored statistics and keep them (true), or adapt them and their affine weights
                to the new data in training (false).
            backbone_lr_factor: the backbone's learning rate is the configured one times this.
            aux_loss_weight: weight of auxiliary classifiers' losses (Inception), training only;
                the training loss includes them.
            mixup_alpha, cutmix_alpha: > 0 blends each training batch with MixUp (the images
                overlaid) or CutMix (a patch of one in another), mixing ratios drawn from
                Beta(alpha, alpha); both > 0: one or the other per batch, as in torchvision's
                reference recipe (0.2 and 1.0). The loss takes the blended labels; the metrics
                compare with the true ones.
            label_smoothing: cross-entropy against targets smoothed by this much (0: none).
            class_weights: a weight per class in the loss, or `balanced` (from the training
                labels: rare classes weigh more), for imbalanced data.
            decay_norms_and_biases: false: the optimizer's weight decay spares biases and
                normalization layers (as in timm's and torchvision's recipes).
        """
        super().__init__(
            num_outputs,
            task,
            optimizer,
            lr_scheduler,
            label_smoothing,
            class_weights,
            decay_norms_and_biases,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if freeze == "none" and unfreeze_at_epoch is not None:
            raise UserError("model.unfreeze_at_epoch needs model.freeze: backbone")
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise UserError(f"model.unfreeze_at_epoch must be >= 0, got {unfreeze_at_epoch}")
        if backbone_lr_factor < 0:
            raise UserError(f"model.backbone_lr_factor must be >= 0, got {backbone_lr_factor}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserError("model.mixup_alpha and model.cutmix_alpha must be >= 0 (0: off)")
        if (mixup_alpha or cutmix_alpha) and task != "classification":
            raise UserError("model.mixup_alpha and model.cutmix_alpha are for classification")
        if backbone == "inception_v3" and image_size is not None and image_size < 299:
            # torch would fail at the first training batch, deep inside the auxiliary classifier
            raise UserError(f"inception_v3 needs model.image_size >= 299, got {image_size}")
        # not `self.freeze`: LightningModule.freeze() is a method
        self.freeze_backbone = freeze == "backbone"
        self.unfreeze_at_epoch, self.bn_eval = unfreeze_at_epoch, bn_eval
        self.backbone_lr_factor = backbone_lr_factor
        self.aux_loss_weight = aux_loss_weight
        self.aux_outputs: list[torch.Tensor] = []
        mixers = [
            mixer(alpha=alpha, num_classes=num_outputs)
            for mixer, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
            if alpha > 0
        ]
        self.mixer = v2.RandomChoice(mixers) if mixers else None

        source = None if weights is None else weights_source(weights, backbone)
        channels, height, width = input_size
        size = (image_size, image_size) if image_size else (height, width)

        def build(classes: int) -> nn.Module:
            return build_network(backbone, classes, (channels, *size), source is not None)

        self.net = build(num_outputs)
        self.head_keys = head_keys(build)
        if source is not None:
            load_backbone(self.net, read_state(source), self.head_keys, str(weights))

        # what the network is fed: torchvision backbones take 3 channels and the weights'
        # normalisation (the DEFAULT weights' when training from scratch or from a file)
        self.channels = channels if backbone == SMALL_CNN else 3
        self.preprocess: nn.Module | None = None
        if backbone != SMALL_CNN:
            default = get_model_weights(backbone).DEFAULT
            reference = source if isinstance(source, WeightsEnum) else default
            sizes = {"crop_size": image_size, "resize_size": image_size} if image_size else {}
            self.preprocess = reference.transforms(**sizes)
        elif image_size:
            self.preprocess = v2.Resize(size)
        # a batch for the model summary and for export
        self.example_input_array = torch.zeros(2, *input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_dtype(images, torch.float32, scale=True)
        if x.shape[1] != self.channels:  # grey images for a backbone that wants 3 channels
            x = x.expand(-1, self.channels, -1, -1)
        if self.preprocess is not None:
            x = self.preprocess(x)
        outputs = self.net(x)
        self.aux_outputs = []
        if isinstance(outputs, tuple):  # Inception / GoogLeNet in training: (logits, aux, …)
            outputs, *self.aux_outputs = outputs
        return outputs

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixer is None:
            return images, targets
        # floats first: blending uint8 images would round every pixel
        return self.mixer(to_dtype(images, torch.float32, scale=True), targets)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        main_loss = super().loss_fn
        loss = main_loss(outputs, targets)
        if self.aux_outputs:  # auxiliary classifiers count in training only, as in the paper
            aux = sum(main_loss(output, targets) for output in self.aux_outputs)
            self.log("train/aux_loss", aux, on_step=False, on_epoch=True)
            loss = loss + self.aux_loss_weight * aux
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self.draw_predictions(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if batch_idx == 0:
            self.draw_predictions(batch, "test")

    def draw_predictions(self, batch: tuple[torch.Tensor, ...], stage: str) -> None:
        """The first images of the split with their predicted and true labels, into TensorBoard:
        the same images at every validation, so a run's grids show what it learned when."""
        if not self.trainer.is_global_zero:
            return
        images, targets = batch[0][:SAMPLES_SHOWN], batch[1][:SAMPLES_SHOWN]
        with torch.no_grad():
            outputs = self(images)
        if self.task == "regression":
            values = outputs.reshape(targets.shape).float().tolist(), targets.float().tolist()
            predicted, actual = ([f"{value:.3g}" for value in side] for side in values)
            grid = prediction_grid(images, predicted, actual)
        else:
            # names such as CIFAR-10's "cat" or an image folder's, when the data has them
            label = self.class_names()
            guesses = outputs.argmax(-1)
            predicted = [label[k] for k in guesses.tolist()]
            actual = [label[k] for k in targets.tolist()]
            grid = prediction_grid(images, predicted, actual, (guesses == targets).tolist())
        self.log_image(f"{stage}/predictions", grid)

    def is_head(self, name: str) -> bool:
        """Whether a parameter or buffer of `net` belongs to the classification head."""
        return name in self.head_keys

    def backbone_modules(self) -> list[nn.Module]:
        """The modules of `net` that hold backbone parameters or buffers (what `freeze` freezes)."""
        head_modules = {key.rsplit(".", 1)[0] for key in self.head_keys}
        return [
            module
            for name, module in self.net.named_modules()
            if name not in head_modules
            and (next(module.parameters(recurse=False), None) is not None or is_batch_norm(module))
        ]

    def parameter_groups(self) -> list[dict]:
        """A head group at the configured learning rate and a backbone group at `lr × factor`."""
        head, backbone = [], []
        for name, parameter in self.net.named_parameters():
            if parameter.requires_grad:
                (head if self.is_head(name) else backbone).append(parameter)
        groups = [{"params": head, "name": "head"}]
        if backbone:
            groups.append(
                {"params": backbone, "name": "backbone", "lr_factor": self.backbone_lr_factor}
            )
        return groups

    def configure_callbacks(self) -> list[Callback]:
        if not self.freeze_backbone:
            return []
        return [BackboneFreeze(self.unfreeze_at_epoch, self.backbone_lr_factor, self.bn_eval)]
