"""Training-image augmentations that any image data takes by name (torchvision transforms v2)."""

from typing import Literal

from torchvision.transforms import v2

from project.errors import UserError

# torchvision's searched-for policies, each on uint8 images of any size
POLICIES = {
    "trivial_augment": v2.TrivialAugmentWide,
    "rand_augment": v2.RandAugment,
    "auto_augment": v2.AutoAugment,
}
Policy = Literal["trivial_augment", "rand_augment", "auto_augment"]


def check_recipe(policy: str | None, random_erasing: float) -> None:
    if policy is not None and policy not in POLICIES:  # a Literal, unless built in Python
        raise UserError(f"unknown data.policy {policy!r}: use one of {', '.join(POLICIES)}")
    if not 0 <= random_erasing <= 1:
        raise UserError(
            f"data.random_erasing must be a probability in [0, 1], got {random_erasing}"
        )


def recipe_steps(policy: str | None, random_erasing: float) -> list[v2.Transform]:
    """The policy, then random erasing (last, as in torchvision's reference recipe: it blanks
    a rectangle of the already augmented image)."""
    steps = [POLICIES[policy]()] if policy else []
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing))
    return steps
