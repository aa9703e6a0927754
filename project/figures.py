"""Pictures drawn into TensorBoard: the confusion matrix and a grid of sample predictions."""

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import pil_to_tensor, resize, to_dtype, to_pil_image
from torchvision.utils import make_grid

RIGHT, WRONG, NEUTRAL = (40, 160, 40), (210, 40, 40), (60, 60, 60)


def confusion_image(matrix: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """A row-normalised confusion matrix as a `(3, H, W)` image: white is 0, dark blue is 1."""
    rows = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    shade = 1 - rows.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    return torch.stack([shade, 0.3 + 0.7 * shade, torch.ones_like(shade)]).clamp(0, 1)


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
