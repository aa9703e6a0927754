"""What `fit` prints when it ends: where the run is, how good it got, and what to run next."""

import re
from pathlib import Path

from lightning import Trainer


def print_run_summary(trainer: Trainer, seconds: float) -> None:
    lines = [
        f"fit took {seconds:.1f} s ({trainer.current_epoch} epochs, {trainer.global_step} steps)"
    ]
    best = trainer.checkpoint_callback
    if best is not None and best.best_model_path:
        epoch = re.search(r"epoch=(\d+)", Path(best.best_model_path).name)
        at = f" at epoch {epoch.group(1)}" if epoch else ""
        lines.append(f"best checkpoint: {best.best_model_path}")
        lines.append(f"best {best.monitor}: {float(best.best_model_score):.4f}{at}")
    tests = {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if tests:
        lines.append("test: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(tests.items())))
    # the logger's folder, not `trainer.log_dir`: that is a DDP broadcast, and only rank 0 is here
    log_dir = getattr(trainer.logger, "log_dir", None)
    if log_dir and Path(log_dir, "config.yaml").exists():
        run = Path(log_dir)
        lines += [
            f"run folder: {run}  (metrics.json, config.yaml, checkpoints/)",
            f"curves:     tensorboard --logdir {run.parent.parent}   (or: make tensorboard)",
            f"test:       python -m project test -c {run}/config.yaml --ckpt_path best",
            f"predict:    python -m project predict -c {run}/config.yaml --ckpt_path best",
        ]
    width = max(map(len, lines))
    print("\n".join(["─" * width, *lines, "─" * width]))
