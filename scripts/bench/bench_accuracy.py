"""Time to a test accuracy on the default experiment, for the template and the hand-written loop
(`scripts/bench/benchmark.py`'s `time_to_accuracy`)."""

import time
from pathlib import Path

from bench_paths import build

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_accuracy(model, data) -> float:  # noqa: ANN001
    """Accuracy of `model` on the test split, computed the same way for both paths."""
    import torch

    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, targets, *lengths in data.test_dataloader():
            predicted = model(inputs.to(model.device), *lengths).argmax(-1).cpu()
            correct += int((predicted == targets).sum())
            total += len(targets)
    model.train(was_training)
    return correct / total


def time_to_accuracy(path: str, target: float, quick: bool = False) -> dict:
    """Trains the default experiment for its full schedule; after each epoch the test accuracy
    is probed with the clock stopped. Returns the training seconds until it first reached
    `target`, and the accuracy at the end. `quick`: 2 epochs, a check and not a figure."""
    args = ["-c", str(CONFIGS / "sequence" / "gru.yaml")]
    epochs = ["--trainer.max_epochs", "2"] if quick else []
    history: list[tuple[float, float]] = []  # (training seconds so far, test accuracy)
    if path == "template":
        from lightning import Callback

        class Probe(Callback):
            def __init__(self) -> None:
                self.elapsed = 0.0
                self.started = 0.0

            def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
                self.started = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
                # the epoch's validation has run by now: it counts, as it would for a user
                self.elapsed += time.perf_counter() - self.started
                history.append((self.elapsed, test_accuracy(pl_module, trainer.datamodule)))

        cli = build([*args, *epochs, "--trainer.logger.init_args.save_dir", "."], validate=True)
        cli.trainer.callbacks.append(Probe())
        cli.datamodule.setup("test")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    else:
        cli = build([*args, *epochs], validate=True)  # the config's schedule, as the template
        model, data = cli.model, cli.datamodule
        data.setup("fit")
        data.setup("test")
        configured = model.configure_optimizers()
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        loader = data.train_dataloader()
        if hasattr(scheduler, "size_to_run"):  # WarmupCosineLR: what fit does at train start
            scheduler.size_to_run(cli.trainer.max_epochs * len(loader), len(loader))
        per_step = configured["lr_scheduler"].get("interval") == "step"
        elapsed = 0.0
        for epoch in range(cli.trainer.max_epochs):
            started = time.perf_counter()
            loader.sampler.set_epoch(epoch)
            model.train()
            for inputs, targets, *lengths in loader:
                optimizer.zero_grad()
                loss = model.loss(model(inputs, *lengths), targets)
                loss.backward()
                optimizer.step()
                if per_step:
                    scheduler.step()
            if not per_step:
                scheduler.step()
            elapsed += time.perf_counter() - started
            history.append((elapsed, test_accuracy(model, data)))
    reached = next((seconds for seconds, accuracy in history if accuracy >= target), None)
    return {
        "seconds_to_target": reached,
        "final_accuracy": history[-1][1],
        "seconds": history[-1][0],
    }
