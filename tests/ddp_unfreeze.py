"""Two 2-process CPU DDP fits with staged unfreezing; each rank saves its final weights.

Run by tests/test_image_finetuning.py as `python tests/ddp_unfreeze.py OUT`; Lightning's DDP
launcher starts the second rank by running the same command again. The first fit uses
BackboneFreeze as it is (`OUT/synced_rank{0,1}.pt`); the second turns off its gradient averaging
(`OUT/unsynced_rank{0,1}.pt`), to show what that averaging prevents.
"""

import sys
from pathlib import Path

import torch
from lightning import LightningModule, Trainer, seed_everything
from torch.optim import Optimizer

from project.callbacks.backbone_freeze import BackboneFreeze
from project.data.digits import DigitsDataModule
from project.models.image import ImageClassifier


class UnsyncedFreeze(BackboneFreeze):
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        pass


class UnsyncedModel(ImageClassifier):
    def configure_callbacks(self) -> list:
        return [UnsyncedFreeze(self.unfreeze_at_epoch, self.backbone_lr_factor, self.bn_eval)]


def fit(model_class: type[ImageClassifier]) -> tuple[int, dict]:
    seed_everything(0)
    data = DigitsDataModule(batch_size=16, augment=False)
    model = model_class(
        data.num_outputs,
        data.input_size,
        backbone="resnet18",  # BatchNorm included: its buffers must agree across ranks too
        image_size=16,
        freeze="backbone",
        unfreeze_at_epoch=1,
        backbone_lr_factor=0.5,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BackboneFreeze()],  # as in every CLI run; UnsyncedModel's replaces it
    )
    trainer.fit(model, data)
    groups = [(g["name"], g["lr"], len(g["params"])) for g in trainer.optimizers[0].param_groups]
    return trainer.global_rank, {"state": model.state_dict(), "groups": groups}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for name, model_class in (("synced", ImageClassifier), ("unsynced", UnsyncedModel)):
        rank, result = fit(model_class)
        torch.save(result, out / f"{name}_rank{rank}.pt")
    # as project/cli/command.py does: a gloo group left to interpreter shutdown can abort it
    torch.distributed.destroy_process_group()
