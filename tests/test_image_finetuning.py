"""Freezing, staged unfreezing and the backbone learning rate, on one process and under DDP."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from project.callbacks.backbone_freeze import BackboneFreeze
from project.data.digits import DigitsDataModule
from project.errors import UserError
from project.models.backbones import is_batch_norm
from project.models.image import ImageClassifier
from tests.conftest import CONFIGS, QUIET, ROOT, cli_process


class Record(Callback):
    """Per epoch: which parameters had gradients, what the optimizer held, BatchNorm modes."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict] = {}

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        names = {id(p): n for n, p in pl_module.net.named_parameters()}
        self.epochs.setdefault(trainer.current_epoch, {}).update(
            with_grad={n for n, p in pl_module.net.named_parameters() if p.grad is not None},
            groups=[
                (g["name"], g["lr"], {names[id(p)] for p in g["params"]})
                for g in optimizer.param_groups
            ],
            bn_training={m.training for m in pl_module.net.modules() if is_batch_norm(m)},
        )


def fit(epochs: int = 1, **options: object) -> tuple[ImageClassifier, Record, dict, dict]:
    """ResNet-18 on digits (8×8 → 16×16) for a few steps; the weights before and after."""
    data = DigitsDataModule(batch_size=32, augment=False)
    model = ImageClassifier(
        data.num_outputs,
        data.input_size,
        backbone="resnet18",
        image_size=16,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        **options,
    )
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    record = Record()
    trainer = Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[record, BackboneFreeze()],  # as in every CLI run
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return model, record, before, model.net.state_dict()


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


HEAD = {"fc.weight", "fc.bias"}


def test_no_freezing_trains_everything_with_a_slower_backbone() -> None:
    model, record, before, after = fit(backbone_lr_factor=0.1)
    everything = {n for n, _ in model.net.named_parameters()}
    (epoch,) = record.epochs.values()
    assert epoch["with_grad"] == everything
    assert epoch["groups"] == [
        ("head", 0.1, HEAD),
        ("backbone", pytest.approx(0.01), everything - HEAD),
    ]
    assert changed(before, after) >= everything


def test_frozen_backbone_with_bn_eval_trains_the_head_alone() -> None:
    model, record, before, after = fit(freeze="backbone", bn_eval=True)
    (epoch,) = record.epochs.values()
    assert epoch["with_grad"] == HEAD
    assert epoch["groups"] == [("head", 0.1, HEAD)]
    assert epoch["bn_training"] == {False}  # normalising with the stored statistics
    # nothing of the backbone moved, running statistics included
    assert changed(before, after) == HEAD


def test_frozen_backbone_without_bn_eval_adapts_batchnorm() -> None:
    model, record, before, after = fit(freeze="backbone", bn_eval=False, backbone_lr_factor=0.5)
    batch_norm = {
        f"{name}.{p}"
        for name, module in model.net.named_modules()
        if is_batch_norm(module)
        for p in ("weight", "bias")
    }
    (epoch,) = record.epochs.values()
    assert epoch["with_grad"] == HEAD | batch_norm
    assert epoch["groups"] == [("head", 0.1, HEAD), ("backbone", 0.05, batch_norm)]
    assert epoch["bn_training"] == {True}
    moved = changed(before, after)
    assert {k for k in moved if "running" in k}, "BatchNorm statistics did not adapt"
    assert not {k for k in moved if "conv" in k or "downsample.0" in k}


def test_staged_unfreezing_at_the_configured_epoch_and_rate() -> None:
    model, record, _, _ = fit(
        epochs=3, freeze="backbone", unfreeze_at_epoch=2, backbone_lr_factor=0.1
    )
    backbone = {n for n, _ in model.net.named_parameters()} - HEAD
    for epoch in (0, 1):
        assert record.epochs[epoch]["with_grad"] == HEAD
        assert record.epochs[epoch]["groups"] == [("head", 0.1, HEAD)]
        assert record.epochs[epoch]["bn_training"] == {False}
    assert record.epochs[2]["with_grad"] == HEAD | backbone
    assert record.epochs[2]["groups"] == [
        ("head", 0.1, HEAD),
        ("backbone", pytest.approx(0.01), backbone),  # every backbone parameter, once
    ]
    assert record.epochs[2]["bn_training"] == {True}


def test_unfreezing_needs_a_frozen_backbone() -> None:
    with pytest.raises(UserError, match="unfreeze_at_epoch needs model.freeze: backbone"):
        ImageClassifier(3, (3, 32, 32), backbone="resnet18", unfreeze_at_epoch=2)


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_weights_after_unfreezing(tmp_path: Path) -> None:
    # two fits of 2 CPU processes (gloo): BackboneFreeze as it is, then without its gradient
    # averaging, which shows that this test can tell the difference
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_unfreeze.py"), str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {p.stem: torch.load(p, weights_only=True) for p in tmp_path.glob("*_rank*.pt")}
    synced, other = runs["synced_rank0"], runs["synced_rank1"]
    assert synced["groups"] == other["groups"]
    assert [name for name, _, _ in synced["groups"]] == ["head", "backbone"]  # it did unfreeze
    for key, value in synced["state"].items():
        assert torch.equal(value, other["state"][key]), f"{key} differs between ranks"
    unsynced, other = runs["unsynced_rank0"], runs["unsynced_rank1"]
    differ = [k for k, v in unsynced["state"].items() if not torch.equal(v, other["state"][k])]
    assert "net.layer1.0.conv1.weight" in differ, "without the averaging the ranks should drift"


@pytest.mark.slow
def test_a_run_resumed_after_unfreezing_does_not_unfreeze_again(tmp_path: Path) -> None:
    """The log says what this process did: a run resumed after its unfreezing epoch reports
    the backbone as trainable already, not as unfrozen a second time."""
    staged = [
        "--model.backbone", "resnet18", "--model.image_size", "32", "--model.weights", "null",
        "--model.freeze", "backbone", "--model.unfreeze_at_epoch", "1",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", *QUIET,
    ]  # fmt: skip
    config = CONFIGS / "image" / "small_cnn.yaml"
    first = cli_process("fit", "-c", config, *staged, "--trainer.max_epochs", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Epoch 1: backbone unfrozen" in first.stderr
    run = tmp_path / "logs" / "small_cnn" / "version_0"
    again = cli_process("fit", "-c", run / "config.yaml", "--ckpt_path", "last",
                        "--trainer.max_epochs", "3", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "backbone unfrozen" not in again.stderr
    assert "Epoch 2: resumed with the backbone trainable (unfrozen at epoch 1)" in again.stderr
    assert "resumed at step 4, trained 2 steps to step 6" in again.stdout


def test_freezing_without_the_callback_is_a_one_line_error() -> None:
    """The freezing is BackboneFreeze's, in every CLI run: a Trainer built without it would
    train the whole network while the model says `freeze: backbone`."""
    data = DigitsDataModule(batch_size=8, augment=False)
    model = ImageClassifier(data.num_outputs, data.input_size, freeze="backbone")
    trainer = Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False)
    with pytest.raises(UserError, match="needs the project.callbacks.BackboneFreeze callback"):
        trainer.fit(model, data)
