"""The README's export table: every shipped model, and the README's own, exported to each format
and checked against its checkpoint on fresh inputs.

    python scripts/export_table.py [--only gru resnet18 …] [--out logs/export_table]

Each case is an ordinary run, fit for 2 steps on offline data (the image configs on small files
in their datasets' own formats, at small image sizes but Inception's 299), then exported by
`python -m project.export` to `.pt2`, ONNX and TorchScript. The table goes to stdout and to
`<out>/table.md`. Export does not depend on training: 2 steps give a checkpoint like any other.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.image_files` writes the offline image data

from project.cli import main as cli  # noqa: E402
from project.export import Exported, export  # noqa: E402
from tests.image_files import write_cifar10, write_mnist  # noqa: E402

SEQUENCE, IMAGE = ROOT / "configs" / "sequence", ROOT / "configs" / "image"
TINY = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SIGNALS = SEQUENCE / "signal_frequency.yaml"  # padded waves of 20 to 60 steps with `lengths`


def images(writer: Callable[[Path], Path], size: int | None) -> Callable[[Path], list[str]]:
    """Flags for an image config: its data written offline, no downloads, small batches."""

    def flags(folder: Path) -> list[str]:
        root = writer(folder / "data")
        resize = ["--model.init_args.image_size", str(size)] if size else []
        return [
            *("--model.init_args.weights", "null", *resize),
            *("--data.init_args.root", str(root), "--data.init_args.download", "false"),
            *("--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"),
            # the configs warm up for an epoch: a 2-step run has 2 epochs of one batch
            *("--trainer.limit_train_batches", "1", "--trainer.max_epochs", "2"),
        ]

    return flags


def readme_model(folder: Path) -> list[str]:
    """The README's "Add your model" files (my_models.py, my_data.py) written into `folder`,
    which becomes importable, as `PYTHONPATH=.` makes it in the README's command."""
    from tests.test_readme_examples import readme_files

    for name, text in readme_files().items():
        (folder / name).write_text(text)
    sys.path.insert(0, str(folder))
    return ["-c", str(folder / "my_experiment.yaml")]


CIFAR = images(lambda root: write_cifar10(root, per_file=2), 32)
# name: (label, config or None for flags that name it, flags for a run in a folder)
CASES: dict[str, tuple[str, Path | None, Callable[[Path], list[str]]]] = {
    "gru": ("GRU, MNIST-1D", SEQUENCE / "gru.yaml", lambda _: []),
    "lstm": ("LSTM, MNIST-1D", SEQUENCE / "lstm.yaml", lambda _: []),
    "rnn": ("RNN, MNIST-1D", SEQUENCE / "rnn.yaml", lambda _: []),
    "gru_lengths": ("GRU, padded waves + lengths", SIGNALS, lambda _: []),
    "lstm_lengths": (
        "LSTM 2 layers bidirectional, padded waves + lengths",
        SIGNALS,
        lambda _: [
            "--model.init_args.cell",
            "lstm",
            "--model.init_args.num_layers",
            "2",
            "--model.init_args.bidirectional",
            "true",
        ],  # fmt: skip
    ),
    "rnn_lengths": (
        "RNN, padded waves + lengths",
        SIGNALS,
        lambda _: ["--model.init_args.cell", "rnn"],
    ),
    "resnet18": ("ResNet-18, CIFAR-10 files, 32×32", IMAGE / "resnet18_cifar10.yaml", CIFAR),
    "vgg16": (
        "VGG-16, Fashion-MNIST files, 32×32",
        IMAGE / "vgg16.yaml",
        images(lambda root: write_mnist(root, "FashionMNIST"), 32),
    ),
    "inception_v3": (
        "Inception v3, CIFAR-10 files, 299×299",
        IMAGE / "inception_v3.yaml",
        images(lambda root: write_cifar10(root, per_file=2), None),
    ),
    "readme_conv1d": ("README's ConvNet1D (my_models.py)", None, readme_model),
}
FORMATS = ["pt2", "onnx", "torchscript"]


def export_case(name: str, folder: Path, formats: list[str] = FORMATS) -> list[Exported]:
    """Fits case `name` for 2 steps in `folder` (the current directory: runs go to its logs/)
    and exports its last checkpoint to `formats`."""
    _, config, flags = CASES[name]
    given = flags(folder)
    configs = ["-c", str(config)] if config else []
    cli(["fit", *configs, *given, "--experiment", f"export_{name}", *TINY, *QUIET])
    (run,) = sorted((folder / "logs" / f"export_{name}").glob("*/"))
    checkpoint = run / "checkpoints" / "last.ckpt"
    return export(checkpoint, run / "export", formats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out", type=Path, default=Path("logs") / "export_table")
    args = parser.parse_args()
    out = args.out.resolve()
    lines = [
        "| model | format | dynamic axes | checked on (batch × steps) | max abs difference"
        " | largest abs output |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in args.only:
        start = time.monotonic()
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
        for file in export_case(name, folder):
            if file.problem is None:
                result = f"{file.max_difference:.1e} | {file.largest_output:.2g}"
            else:
                result = f"not written: {file.problem} |"
            lines.append(
                f"| {CASES[name][0]} | {file.format} | {file.dynamic} | {file.checked} | {result} |"
            )
        print(f"{name}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    table = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
