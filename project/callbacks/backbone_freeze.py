"""Freezing a pretrained backbone, and unfreezing it some epochs later (Lightning's BaseFinetuning).

The model decides what its backbone is (`backbone_modules()`) and whether to freeze it: this
callback is in every run (`run_callbacks`) and acts when the model's config says
`freeze: backbone`, with the model's settings, so one `model:` block holds the whole fine-tuning
recipe; in any other run it does nothing.
"""

from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch.optim import Optimizer

from project.errors import UserError
from project.models.backbones import is_batch_norm


class BackboneFreeze(BaseFinetuning):
    """Trains only the head, and from `unfreeze_at_epoch` on the backbone too at `lr × lr_factor`.

    `bn_eval=True`: the frozen backbone's BatchNorm layers run in eval mode, so they normalise
    with their stored statistics in training as at test time, and never update them. (Lightning's
    `freeze(train_bn=False)` alone stops the updates but still normalises training batches with
    their own statistics.) `bn_eval=False`: those layers keep training, statistics and weights.

    Under DDP, parameters unfrozen after DDP wrapped the model are not in its gradient all-reduce
    (DDP registers only the parameters that required grad at wrap time): left alone, each rank
    would step with its own gradients and the replicas would drift apart. This callback averages
    those gradients across ranks itself before each optimizer step.
    """

    def __init__(
        self,
        unfreeze_at_epoch: int | None = None,
        lr_factor: float | None = None,
        bn_eval: bool | None = None,
    ) -> None:
        """Each setting left None is the model's (`unfreeze_at_epoch`, `backbone_lr_factor`,
        `bn_eval`)."""
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.lr_factor = lr_factor
        self.bn_eval = bn_eval
        self.active = False  # whether the model freezes its backbone: set in `setup`
        self.synced_by_ddp: set[int] = set()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.active = bool(getattr(pl_module, "freeze_backbone", False))
        if not self.active:
            return
        if self.unfreeze_at_epoch is None:
            self.unfreeze_at_epoch = pl_module.unfreeze_at_epoch
        if self.lr_factor is None:
            self.lr_factor = pl_module.backbone_lr_factor
        if self.bn_eval is None:
            self.bn_eval = pl_module.bn_eval
        staged = self.unfreeze_at_epoch is not None
        if staged and trainer.world_size > 1 and not isinstance(trainer.strategy, DDPStrategy):
            name = type(trainer.strategy).__name__
            raise UserError(f"staged unfreezing supports one device or DDP, not {name}")
        super().setup(trainer, pl_module, stage)

    def state_dict(self) -> dict[str, Any]:
        # nothing in the checkpoint of a run that freezes nothing, as without this callback
        return super().state_dict() if self.active else {}

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone_modules(), train_bn=not self.bn_eval)

    def frozen(self, pl_module: LightningModule) -> bool:
        return any(True for _ in self.filter_params(pl_module.backbone_modules(), False, False))

    def finetune_function(
        self, pl_module: LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        # `>=` rather than `==`: a run resumed after the unfreezing epoch must unfreeze too
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch:
            return
        if not self.frozen(pl_module):
            return
        modules = pl_module.backbone_modules()
        self.make_trainable(modules)
        for module in filter(is_batch_norm, modules):
            module.train()
        # by identity: Lightning's `filter_on_optimizer` compares values, so a zero-initialised
        # conv bias could pass for a still-zero head bias of its size and never be trained
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for p in self.filter_params(modules) if id(p) not in present]
        lr = optimizer.param_groups[0]["lr"] * self.lr_factor  # group 0: the head
        if not new:  # a resumed run, whose optimizer state already holds the group
            rank_zero_info(
                f"Epoch {epoch}: resumed with the backbone trainable "
                f"(unfrozen at epoch {self.unfreeze_at_epoch})"
            )
            return
        group = {"params": new, "lr": lr, "name": "backbone", "lr_factor": self.lr_factor}
        for part in pl_module.decay_groups([group]):
            optimizer.add_param_group(part)
        rank_zero_info(f"Epoch {epoch}: backbone unfrozen, learning rate {lr:.3g}")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active:
            return
        super().on_train_epoch_start(trainer, pl_module)
        if self.bn_eval and self.frozen(pl_module):
            for module in filter(is_batch_norm, pl_module.backbone_modules()):
                module.eval()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active:
            return
        super().on_fit_start(trainer, pl_module)
        # the strategy has wrapped the model by now: these are the parameters DDP all-reduces
        self.synced_by_ddp = {id(p) for p in pl_module.parameters() if p.requires_grad}

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        if not self.active or trainer.world_size == 1:
            return
        if not isinstance(trainer.strategy, DDPStrategy):
            return
        unsynced = [
            p for p in pl_module.parameters() if p.requires_grad and id(p) not in self.synced_by_ddp
        ]
        if not unsynced:
            return
        # every rank unfreezes at the same epoch, so all hold the same list: one all-reduce
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in unsynced]
        mean = trainer.strategy.reduce(torch.cat([g.flatten() for g in grads]), reduce_op="mean")
        for parameter, grad in zip(
            unsynced, mean.split([p.numel() for p in unsynced]), strict=True
        ):
            parameter.grad = grad.view_as(parameter).clone()
