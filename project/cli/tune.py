"""`python -m project tune -c configs/<exp>.yaml`: Lightning's batch-size and learning-rate
finders on an experiment, their suggestion written as an overlay to `-c` into the next fit.

The tuning run lives in `logs/<exp>/tune/version_N/`: `tuned.yaml` (the overlay),
`lr_find.png` (loss against learning rate, the suggestion marked; also in TensorBoard's
images with the overlay in its text tab).
"""

import io
import math
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser  # noqa: E402
from lightning.pytorch.tuner import Tuner  # noqa: E402
from PIL import Image  # noqa: E402

from project.cli import ProjectCLI, make_cli  # noqa: E402
from project.cli.run_folder import run_folder_args  # noqa: E402
from project.errors import UserError  # noqa: E402


class TuneCLI(ProjectCLI):
    """The fit command's arguments, plus the finders' own; logs under `<experiment>/tune`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--batch_size_search",
            type=bool | None,
            default=None,
            help="Search the largest batch that fits in memory (default: on GPUs only; on a "
            "CPU memory does not bound the batch, and the config's is kept).",
        )
        parser.add_argument(
            "--min_steps_per_epoch",
            type=int,
            default=20,
            help="The batch search stops at the batch leaving this many steps per epoch: on a "
            "CPU memory never stops it, and a batch of the whole training set trains badly.",
        )
        parser.add_argument("--min_lr", type=float, default=1e-5, help="Learning-rate range start.")
        parser.add_argument("--max_lr", type=float, default=1.0, help="Learning-rate range end.")
        parser.add_argument(
            "--lr_steps",
            type=int,
            default=300,
            help="Steps of the learning-rate range test: enough for the loss to fall (Lightning's "
            "100 leave the default GRU's flat).",
        )

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        config = self.config
        if config.min_steps_per_epoch < 1 or config.lr_steps < 2:
            raise UserError("--min_steps_per_epoch must be >= 1 and --lr_steps >= 2")
        if not 0 < config.min_lr < config.max_lr:
            raise UserError(f"need 0 < --min_lr < --max_lr, got {config.min_lr}, {config.max_lr}")
        logger = run_folder_args(config)  # a logger that keeps a run folder
        if logger is not None:
            logger.name = f"{logger.name}/tune"


def tune(args: list[str]) -> Path:
    """Runs both finders and returns the written overlay's path."""
    # `args` are the command line's, after `tune`: LightningCLI warns of both, needlessly
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    cli = make_cli(args, run=False, cli_class=TuneCLI)
    config, trainer, model, data = cli.config, cli.trainer, cli.model, cli.datamodule
    tuner = Tuner(trainer)
    batch_size = data.batch_size
    search = config.batch_size_search
    if search is None:
        search = trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        if not search:
            print(f"note: batch size kept at {batch_size}: no GPU memory to fill here "
                  "(--batch_size_search true searches anyway)", file=sys.stderr)  # fmt: skip
    if search:
        data.setup("fit")
        samples = len(data.train_dataloader().dataset)
        ceiling = max(1, samples // config.min_steps_per_epoch)
        found = tuner.scale_batch_size(
            model,
            datamodule=data,
            mode="binsearch",
            init_val=min(batch_size, ceiling),
            max_val=ceiling,
        )
        batch_size = min(int(found), ceiling)
        data.batch_size = batch_size
    finder = tuner.lr_find(
        model,
        datamodule=data,
        min_lr=config.min_lr,
        max_lr=config.max_lr,
        num_training=config.lr_steps,
        update_attr=False,
    )
    if finder is not None and trainer.accumulate_grad_batches == 1:
        finder.results["loss"] = unbiased(finder.results["loss"])
    lr = tenth_of_lowest(finder.results["lr"], finder.results["loss"]) if finder else None
    if lr is None:
        raise UserError(
            "the learning-rate finder found no falling loss: widen --min_lr/--max_lr or raise "
            "--lr_steps"
        )
    return write_results(trainer, config, batch_size, search, float(lr), finder)


def unbiased(losses: list[float], beta: float = 0.98) -> list[float]:
    """The LR finder's smoothed losses with the bias correction it means.

    Lightning 2.6's `_LRCallback` divides its running average after batch i by
    1 - beta^(i+2) (it reads `global_step` after the step) instead of 1 - beta^(i+1), so its
    first point is about half the real loss and the curve starts with a dip that is not there,
    still 8% low at the 10th point, where the suggestion's search begins. (NaN points, for
    batches without a loss, stay NaN.)
    """
    return [loss * (1 - beta ** (i + 2)) / (1 - beta ** (i + 1)) for i, loss in enumerate(losses)]


def tenth_of_lowest(lrs: list[float], losses: list[float], skip: int = 10) -> float | None:
    """A tenth of the rate at which the (smoothed) loss was lowest: the range test's classic
    reading (Smith 2017; fast.ai's `minimum`), a rate that still trains fast but stays an
    order of magnitude from where the loss turns to diverge.

    Not Lightning's `suggestion()`: it takes the steepest slope per unit of rate (its issue
    21141), which on exponentially spaced rates magnifies the flat start's noise by 1/rate and
    picks about the smallest rate tried. Taken per decade of rate instead, the steepest fall on
    the default GRU was at 0.02, and a fit there reached 94.7% against 97% at 0.01.
    """
    points = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if math.isfinite(loss)]
    points = points[skip:]
    if len(points) < 2:
        return None
    lowest_lr, _ = min(points, key=lambda point: point[1])
    # one significant digit: the test is not more precise (reruns move it by up to 2x)
    return float(f"{lowest_lr / 10:.1g}")


def write_results(  # noqa: ANN001 (Lightning's and jsonargparse's objects)
    trainer, config, batch_size: int, searched: bool, lr: float, finder
) -> Path:
    folder = Path(trainer.logger.log_dir) if trainer.logger else Path("logs/tune")
    folder.mkdir(parents=True, exist_ok=True)
    files = " -c ".join(str(f) for f in config.get("config") or [])
    batch_note = (
        f"the batch-size finder's largest batch (at most 1/{config.min_steps_per_epoch} of "
        "the training set)"
        if searched
        else "the config's batch size (not searched)"
    )
    header = (
        f"# Suggested by `python -m project tune -c {files}`:\n# {batch_note}, and a tenth of "
        "the rate of lowest loss in the learning-rate range test at that batch.\n"
        f"# Use it: python -m project fit -c {files} -c {folder}/tuned.yaml\n"
    )
    overlay = {
        "data": {"init_args": {"batch_size": batch_size}},
        "optimizer": {"init_args": {"lr": lr}},
    }
    path = folder / "tuned.yaml"
    path.write_text(header + yaml.safe_dump(overlay, sort_keys=False))
    figure = finder.plot(suggest=False)
    figure.axes[0].axvline(lr, color="red", linestyle="--", label=f"suggested: {lr:.3g}")
    figure.axes[0].legend()
    figure.axes[0].set_title(f"learning-rate range test at batch {batch_size}: {lr:.3g} suggested")
    figure.savefig(folder / "lr_find.png", dpi=100)
    experiment = getattr(trainer.logger, "experiment", None)
    if hasattr(experiment, "add_image"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        image = np.array(Image.open(buffer).convert("RGB"))
        experiment.add_image("tune/lr_find", image, 0, dataformats="HWC")
        experiment.add_text("tune/tuned.yaml", "    " + path.read_text().replace("\n", "\n    "))
        experiment.flush()
    plt.close(figure)
    print(f"batch size {batch_size}, learning rate {lr:.3g}: {path}", file=sys.stderr)
    print(f"next: python -m project fit -c {files} -c {path}", file=sys.stderr)
    return path
