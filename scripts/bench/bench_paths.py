"""The three paths `scripts/bench/benchmark.py` times: the template as `fit` runs it,
Lightning's bare loop, and the seed's hand-written loop, each over the same model, batches and
optimizer."""

import itertools
import resource
import statistics
import time
from collections.abc import Iterator


def build(args: list[str], validate: bool = False):  # noqa: ANN201 (a ProjectCLI)
    from project.cli import make_cli

    if not validate:
        # a fixed learning rate on every path: the hand-written loop has no schedule to step,
        # and the per-step losses must agree (a schedule costs one call per step, the same here)
        args = [*args, "--trainer.limit_val_batches", "0", "--lr_scheduler", "null"]
    return make_cli([*args, "--trainer.enable_progress_bar", "false"], run=False)


def measure_template(args: list[str], steps: int, warmup: int, bare: bool, gpu: bool) -> dict:
    """`bare`: Lightning's loop and nothing of the template (no logger, callbacks, metrics or
    `self.log`; `training_step` is the hand-written loop's forward and loss): what Lightning
    itself costs, apart from what the template adds."""
    from lightning import Callback, Trainer

    class StepClock(Callback):
        """The time each timed step starts (and when the last one ends), and every loss."""

        def __init__(self) -> None:
            self.losses: list = []
            self.marks: list[tuple[float, float]] = []
            self.step = 0  # over epochs (batch_idx starts again at each)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if self.step == warmup:
                _synchronize(pl_module.device.type)
            if self.step >= warmup:
                self.marks.append(read_clocks())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            self.losses.append(outputs["loss"].detach())  # read after the run: no sync per step
            self.step += 1
            if self.step == warmup + steps:
                _synchronize(pl_module.device.type)
                self.marks.append(read_clocks())
                trainer.should_stop = True

    # as many epochs as the steps need: the clock stops the run
    cli = build([*args, "--trainer.max_epochs", "-1", "--trainer.logger.init_args.save_dir", "."])
    clock = StepClock()
    if bare:
        bare_model(cli.model)
        if gpu:
            set_up_gpu_by_hand(cli.model)
        trainer = Trainer(
            accelerator="gpu" if gpu else "cpu",
            devices=1,
            precision="bf16-mixed" if gpu else "32-true",
            max_epochs=-1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
        )
    else:
        trainer = cli.trainer
        trainer.callbacks.append(clock)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    device_type = "cuda" if gpu else "cpu"  # fit's teardown has moved the model back to the CPU
    return {
        **throughput(clock.marks, cli.datamodule.batch_size, device_type),
        "losses": [float(loss) for loss in clock.losses],
        "peak_mb": peak_memory_mb(device_type),
    }


def bare_model(model) -> None:  # noqa: ANN001
    """Makes `model` train as the hand-written loop does: forward and loss, no metrics, no
    `self.log`, no callbacks of its own."""

    class Bare(type(model)):
        def training_step(self, batch: tuple, batch_idx: int):  # noqa: ANN202
            inputs, targets, *lengths = batch
            return self.loss(self(inputs, *lengths), targets)

        def on_train_epoch_end(self) -> None:
            pass

        def configure_callbacks(self) -> list:
            return []

    model.__class__ = Bare


def measure_hand_written(args: list[str], steps: int, warmup: int, gpu: bool) -> dict:
    """The seed's loop over the same model, batches and optimizer; on a GPU with the settings
    of configs/trainer/gpu.yaml and bf16.yaml written out by hand."""
    import contextlib

    import torch

    cli = build(args)
    model, data = cli.model, cli.datamodule
    device = torch.device("cuda" if gpu else "cpu")
    model.to(device).train()
    autocast = contextlib.nullcontext()
    if gpu:
        set_up_gpu_by_hand(model)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    data.setup("fit")
    if getattr(data, "on_device", False):  # synthetic images: kept on the GPU, as the template does
        data.move_to(device)
    loader = data.train_dataloader()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    marks, losses = train_by_hand(model, loader, optimizer, autocast, device, steps, warmup)
    return {
        **throughput(marks, data.batch_size, device.type),
        "losses": [float(loss) for loss in losses],
        "peak_mb": peak_memory_mb(device.type),
    }


def train_by_hand(model, loader, optimizer, autocast, device, steps: int, warmup: int) -> tuple:  # noqa: ANN001
    """The seed's loop, epoch after epoch until `warmup + steps` steps; the clocks at each timed
    step's start (and the last one's end), and every loss. Its own function, so that a profile
    finds its steps (scripts/bench/profile_steps.py)."""
    losses: list = []
    marks: list[tuple[float, float]] = []
    for index, (inputs, targets, *lengths) in enumerate(epochs_of(loader)):
        if index == warmup:
            _synchronize(device.type)
        if index >= warmup:
            marks.append(read_clocks())
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        with autocast:
            loss = model.loss(model(inputs, *lengths), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if index == warmup + steps - 1:
            _synchronize(device.type)
            marks.append(read_clocks())
            break
    return marks, losses


def epochs_of(loader) -> Iterator:  # noqa: ANN001
    """The loader's batches epoch after epoch, each epoch's order set as Lightning sets it."""
    for epoch in itertools.count():
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


def read_clocks() -> tuple[float, float]:
    """Wall time and this process's CPU time (all its threads): the CPU time excludes the time
    other processes took the cores, so it still resolves the paths on a busy machine."""
    return time.perf_counter(), time.process_time()


def throughput(marks: list[tuple[float, float]], batch_size: int, device_type: str) -> dict:
    """Samples per second from the clocks at the start of consecutive steps (and the last one's
    end), by wall time and by the process's CPU time.

    On a CPU: the median step, so that a moment when another process takes the core does not
    count against one path only. On a GPU, where a step's start only says when its kernels were
    queued: the whole window, synchronised at both ends only, as training runs (no CPU figure).
    """
    if device_type == "cuda":
        wall = batch_size * (len(marks) - 1) / (marks[-1][0] - marks[0][0])
        return {"samples_per_s": wall, "cpu_samples_per_s": None}
    steps = list(itertools.pairwise(marks))
    return {
        "samples_per_s": batch_size / statistics.median(b[0] - a[0] for a, b in steps),
        "cpu_samples_per_s": batch_size / statistics.median(b[1] - a[1] for a, b in steps),
    }


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def set_up_gpu_by_hand(model) -> None:  # noqa: ANN001
    """What configs/trainer/gpu.yaml sets, as a hand-written loop would (autocast: the caller)."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    model.to(memory_format=torch.channels_last)


def _synchronize(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()
