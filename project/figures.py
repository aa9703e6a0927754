"""Pictures drawn into the run's loggers (project/run_loggers.py): the confusion matrix and a
grid of sample predictions (drawn during a run by project/callbacks/figures.py)."""

from collections.abc import Sequence

import torch
from lightning import LightningModule, Trainer
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import pil_to_tensor, resize, to_dtype, to_pil_image
from torchvision.utils import make_grid

from project.run_loggers import log_image

RIGHT, WRONG, NEUTRAL = (40, 160, 40), (210, 40, 40), (60, 60, 60)
SAMPLES_SHOWN = 16  # images in TensorBoard's `val/predictions` and `test/predictions` grids


def draw_confusion(trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
    if f"{stage}_" not in getattr(pl_module, "confusion", {}):  # a model without one: none
        return
    matrix = pl_module.confusion[f"{stage}_"]
    # synced across ranks by torchmetrics
    image = confusion_image(matrix.compute(), class_names(trainer, pl_module.num_outputs))
    matrix.reset()
    log_image(trainer, f"{stage}/confusion_matrix", image)


def draw_predictions(
    trainer: Trainer, pl_module: LightningModule, batch: tuple[torch.Tensor, ...], stage: str
) -> None:
    if not trainer.is_global_zero:
        return
    images, targets = batch[0][:SAMPLES_SHOWN], batch[1][:SAMPLES_SHOWN]
    with torch.no_grad():
        outputs = pl_module(images)
    if pl_module.task == "regression":
        values = outputs.reshape(targets.shape).float().tolist(), targets.float().tolist()
        predicted, actual = ([f"{value:.3g}" for value in side] for side in values)
        grid = prediction_grid(images, predicted, actual)
    else:
        label = class_names(trainer, pl_module.num_outputs)
        guesses = outputs.argmax(-1)
        predicted = [label[k] for k in guesses.tolist()]
        actual = [label[k] for k in targets.tolist()]
        grid = prediction_grid(images, predicted, actual, (guesses == targets).tolist())
    log_image(trainer, f"{stage}/predictions", grid)


def class_names(trainer: Trainer, count: int) -> list[str]:
    """The data's names of its classes (CIFAR-10's "cat", an image folder's), when it has
    them as `classes`, else the class numbers."""
    names = getattr(trainer.datamodule, "classes", None)
    if names is None or len(names) != count:
        names = range(count)
    return [str(name) for name in names]


def confusion_image(matrix: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
    """A confusion matrix as a `(3, H, W)` uint8 image a person can read: rows are the true
    classes, columns the predicted ones, both named; each cell holds its count and its share of
    the row (the colour, from white at 0% to dark blue at 100%, with a legend); the diagonal is
    outlined. Past ~25 classes the cells are too small for text and show the colour alone."""
    counts = matrix.detach().cpu().long()
    classes = len(counts)
    names = [str(n) for n in (names if names is not None else range(classes))]
    names = [n if len(n) <= 12 else n[:11] + "…" for n in names]
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    cell = max(12, min(48, 640 // classes))
    texts = cell >= 30
    font, small = ImageFont.load_default(size=12), ImageFont.load_default(size=10)
    label_width = max(font.getbbox(n)[2] for n in names) + 8
    left, top = 22 + label_width, 40
    grid = cell * classes
    width, height = left + grid + 70, top + grid + label_width + 26
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 4), "confusion matrix: count and share of the true class's samples",
              fill=(0, 0, 0), font=font)  # fmt: skip
    for row in range(classes):
        for col in range(classes):
            share = float(shares[row, col])
            x, y = left + col * cell, top + row * cell
            draw.rectangle([x, y, x + cell, y + cell], fill=blue(share), outline=(220, 220, 220))
            if row == col:
                draw.rectangle([x + 1, y + 1, x + cell - 1, y + cell - 1], outline=(40, 160, 40))
            if texts and counts[row, col] > 0:
                ink = (255, 255, 255) if share > 0.5 else (0, 0, 0)
                draw.text((x + cell / 2, y + cell / 2 - 6), str(int(counts[row, col])), fill=ink,
                          font=font, anchor="mm")  # fmt: skip
                draw.text((x + cell / 2, y + cell / 2 + 8), f"{share:.0%}", fill=ink, font=small,
                          anchor="mm")  # fmt: skip
    for index, name in enumerate(names):  # row names at the left, column names below, turned
        middle = top + index * cell + cell / 2
        draw.text((left - 4, middle), name, fill=(0, 0, 0), font=font, anchor="rm")
        label = Image.new("RGB", (label_width, 16), (255, 255, 255))
        ImageDraw.Draw(label).text((label_width - 4, 8), name, fill=(0, 0, 0), font=font,
                                   anchor="rm")  # fmt: skip
        turned = label.rotate(90, expand=True)
        canvas.paste(turned, (int(left + index * cell + cell / 2 - 8), top + grid + 2))
    draw.text((left + grid / 2, height - 12), "predicted class", fill=(0, 0, 0), font=font,
              anchor="mm")  # fmt: skip
    axis = Image.new("RGB", (grid, 16), (255, 255, 255))
    ImageDraw.Draw(axis).text((grid / 2, 8), "true class", fill=(0, 0, 0), font=font, anchor="mm")
    canvas.paste(axis.rotate(90, expand=True), (2, top))
    # the legend: the colour of each share, 0% at the bottom
    bar_x = left + grid + 14
    for y in range(grid):
        draw.line([bar_x, top + y, bar_x + 14, top + y], fill=blue(1 - y / max(grid - 1, 1)))
    draw.rectangle([bar_x, top, bar_x + 14, top + grid], outline=(120, 120, 120))
    for share in (0.0, 0.5, 1.0):
        y = top + (1 - share) * grid
        draw.text((bar_x + 18, y), f"{share:.0%}", fill=(0, 0, 0), font=small, anchor="lm")
    return pil_to_tensor(canvas)


def blue(share: float) -> tuple[int, int, int]:
    """White at 0, dark blue at 1."""
    return (round(255 - 235 * share), round(255 - 180 * share), round(255 - 100 * share))


def prediction_grid(
    images: torch.Tensor,
    predicted: Sequence[str],
    actual: Sequence[str],
    correct: Sequence[bool] | None = None,
    tile: int = 96,
) -> torch.Tensor:
    """Images `(N, C, H, W)` (uint8, or floats in [0, 1]) as one `(3, H, W)` uint8 grid.

    Each image is scaled to `tile` pixels and captioned `predicted (actual)`, framed green when
    right and red when wrong (grey when `correct` is None: regression).
    """
    pictures = to_dtype(images.detach().cpu(), torch.uint8, scale=True).expand(-1, 3, -1, -1)
    # nearest keeps the pixels of tiny images (8×8 digits) sharp; large ones are smoothed down
    small = max(pictures.shape[-2:]) < tile
    mode = InterpolationMode.NEAREST if small else InterpolationMode.BILINEAR
    pictures = resize(pictures, [tile, tile], interpolation=mode, antialias=True)
    font = ImageFont.load_default()
    tiles = []
    for index, picture in enumerate(pictures):
        colour = NEUTRAL if correct is None else (RIGHT if correct[index] else WRONG)
        canvas = Image.new("RGB", (tile + 4, tile + 18), colour)
        canvas.paste(to_pil_image(picture), (2, 2))
        caption = f"{predicted[index]} ({actual[index]})"
        ImageDraw.Draw(canvas).text((3, tile + 3), caption, fill=(255, 255, 255), font=font)
        tiles.append(pil_to_tensor(canvas))
    rows = max(1, round(len(tiles) ** 0.5))
    return make_grid(tiles, nrow=-(-len(tiles) // rows), padding=2, pad_value=255)
