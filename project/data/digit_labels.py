"""Keeping some of the ten digit classes, relabelled 0, 1, …: shared by the digit data sets."""

import torch

from project.errors import UserError


def digit_classes(classes: list[int] | None) -> list[int]:
    """The digits a dataset keeps (all ten by default); labels become 0, 1, … in this order."""
    kept = list(range(10)) if classes is None else list(classes)
    if not kept or len(set(kept)) != len(kept) or not set(kept) <= set(range(10)):
        raise UserError(f"data.classes must be distinct digits 0-9, got {classes}")
    return kept


def relabelled(digits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Each digit's position in `classes`, or -1 for a digit not kept."""
    table = torch.full((10,), -1, dtype=torch.int64)
    table[classes] = torch.arange(len(classes))
    return table[digits]
