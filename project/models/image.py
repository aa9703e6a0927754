"""Image classifiers: a torchvision classification backbone (or a small CNN) fine-tuned by name."""

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import to_dtype

from project.errors import UserError
from project.models.backbones import (
    SMALL_CNN,
    build_network,
    head_keys,
    is_batch_norm,
    load_backbone,
)
from project.models.supervised import SupervisedModule
from project.task import Task
from project.weights import preprocessing, read_state, weights_source


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
            self.preprocess = preprocessing(backbone, source, image_size)
        elif image_size:
            self.preprocess = v2.Resize(size)
        # a batch for the model summary and for export
        self.example_input_array = torch.zeros(2, *input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = to_dtype(images, torch.float32, scale=True)
        if x.shape[1] != self.channels:  # grey images for a backbone that wants 3 channels
            x = x.expand(-1, self.channels, -1, -1)
        if self.preprocess is not None:
            x = self.preprocess(x)
        # Inception and GoogLeNet in training: (logits, auxiliary logits…), which `loss` takes
        return self.net(x)

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixer is None:
            return images, targets
        # floats first: blending uint8 images would round every pixel
        return self.mixer(to_dtype(images, torch.float32, scale=True), targets)

    def loss(self, outputs: torch.Tensor | tuple, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, tuple):
            return self.loss_fn(outputs, targets)
        # auxiliary classifiers count in training only (the network returns them then alone),
        # as in the paper
        outputs, *aux_outputs = outputs
        aux = sum(self.loss_fn(output, targets) for output in aux_outputs)
        self.log("train/aux_loss", aux, on_step=False, on_epoch=True)
        return self.loss_fn(outputs, targets) + self.aux_loss_weight * aux

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

    def on_fit_start(self) -> None:
        # the freezing is BackboneFreeze's (in every CLI run's `run_callbacks`); a Trainer built
        # without it would train the whole network while the config says otherwise
        frozen = any(not p.requires_grad for m in self.backbone_modules() for p in m.parameters())
        if self.freeze_backbone and not frozen:
            raise UserError(
                "model.freeze: backbone needs the project.callbacks.BackboneFreeze callback"
            )
