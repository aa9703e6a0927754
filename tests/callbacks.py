"""Callbacks that tests add to real runs through the CLI (`--trainer.callbacks+=...`)."""

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer


def callback_flag(class_name: str, **init_args: object) -> list[str]:
    """The CLI flags that add `tests.callbacks.<class_name>(**init_args)` to a run."""
    spec = {"class_path": f"tests.callbacks.{class_name}", "init_args": init_args}
    return ["--trainer.callbacks+", json.dumps(spec)]


def weights_of(module: LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class SaveWeights(Callback):
    """Each rank saves its weights when fit starts and ends to `<folder>/weights-rank<R>.pt`."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.initial: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.initial = weights_of(pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        saved = {"initial": self.initial, "weights": weights_of(pl_module)}
        saved |= {"world_size": trainer.world_size, "pid": os.getpid()}
        saved |= {"node_rank": trainer.node_rank}
        saved |= {"epoch": trainer.current_epoch, "step": trainer.global_step}
        saved |= {"hparams": {k: str(v) for k, v in pl_module.hparams.items()}}
        saved |= {"lr": [group["lr"] for group in trainer.optimizers[0].param_groups]}
        torch.save(saved, self.folder / f"weights-rank{trainer.global_rank}.pt")


def load_weights(folder: Path) -> dict[int, dict]:
    """`{rank: {"initial": …, "weights": state_dict, "world_size": W, "pid": P}}`."""
    return {
        int(p.stem.removeprefix("weights-rank")): torch.load(p, weights_only=True)
        for p in sorted(folder.glob("weights-rank*.pt"))
    }


class SlowBatches(Callback):
    """Sleeps after every training batch, so that a test can signal a run mid-epoch; rank 0
    writes the global step it has reached to `progress` (a file the test polls; a relative path
    is taken in the trainer's default_root_dir: a search trial's run folder)."""

    def __init__(self, seconds: float, progress: str) -> None:
        self.seconds = seconds
        self.progress = Path(progress)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        if trainer.is_global_zero:
            Path(trainer.default_root_dir, self.progress).write_text(str(trainer.global_step))
        time.sleep(self.seconds)


class TrainingRecord(Callback):
    """Writes `path` when fit ends: the precision Lightning chose, the dtypes `pl_module.net`
    returned while training (bf16 under bf16 autocast), and each epoch's mean training loss."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.dtypes: set[str] = set()
        self.losses: list[float] = []
        self.epoch_losses: list[float] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        def note_dtype(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
            if module.training:
                self.dtypes.add(str(output.dtype))

        pl_module.net.register_forward_hook(note_dtype)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: dict,
        batch: object,
        batch_idx: int,
    ) -> None:
        self.losses.append(outputs["loss"].item())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_losses.append(sum(self.losses) / len(self.losses))
        self.losses = []

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {"precision": trainer.precision, "net_output_dtypes": sorted(self.dtypes)}
        record["train_loss"] = self.epoch_losses
        self.path.write_text(json.dumps(record))


class GradientNorms(Callback):
    """Writes `path` when fit ends: the global L2 norm of the gradients at each optimizer step,
    before Lightning clips them (`on_before_optimizer_step`) and as the optimizer used them
    (still in `.grad` when the batch ends, until the next step clears them)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.before: list[float] = []
        self.applied: list[float] = []

    @staticmethod
    def norm(module: LightningModule) -> float:
        grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
        return torch.cat(grads).norm().item()

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: object
    ) -> None:
        self.before.append(self.norm(pl_module))

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        self.applied.append(self.norm(pl_module))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.path.write_text(json.dumps({"before": self.before, "applied": self.applied}))


class OptimizerSteps(Callback):
    """Writes `path` when fit ends: each optimizer step's learning rate per parameter group,
    and the groups as the optimizer holds them then (name, weight decay, parameter shapes)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.rates: list[list[float]] = []

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.rates.append([group["lr"] for group in optimizer.param_groups])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        groups = [
            {
                "name": group.get("name"),
                "weight_decay": group["weight_decay"],
                "shapes": [list(p.shape) for p in group["params"]],
            }
            for group in trainer.optimizers[0].param_groups
        ]
        self.path.write_text(json.dumps({"rates": self.rates, "groups": groups}))


class StopAtStep(Callback):
    """Ends fit cleanly (checkpoints saved) once the run reaches optimizer step `step`; a run
    resumed past that step goes on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


class LogEveryStep(Callback):
    """Logs `probe/step` on every training batch: Lightning keeps the steps it writes."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("probe/step", float(trainer.global_step))


class ProcessIds(Callback):
    """After every training batch, each rank writes `<pid> <global step>` to `<folder>/rank<R>`:
    a test kills that rank, or one of its DataLoader workers, once it reached a chosen step."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = f"{os.getpid()} {trainer.global_step}"
        (self.folder / f"rank{trainer.global_rank}").write_text(line)
