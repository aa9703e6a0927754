"""Your own images: one subfolder per class, decoded from disk as batches are drawn; new images
to label in one folder."""

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader
from torchvision.transforms import v2

from project.data.augmentation import Policy, check_recipe, recipe_steps
from project.data.base import SplitsDataModule
from project.data.resumable import ResumableLoader, SeededShuffle
from project.errors import UserError
from project.task import Task

SPLITS = ("train", "val", "test")


def class_names(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


class UnlabelledImages(Dataset):
    """The images directly in `folder`, by name; each with the placeholder label -1, which
    `predict_step` ignores. `sample_names` gives `predictions.csv` a `file` column."""

    def __init__(self, folder: Path, transform: v2.Transform) -> None:
        if not folder.is_dir():
            raise UserError(f"predict folder {folder} not found")
        self.files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
        )
        if not self.files:
            raise UserError(
                f"predict folder {folder} holds no images ({', '.join(IMG_EXTENSIONS)}): put "
                "them in it directly, not in subfolders"
            )
        self.sample_names = [p.name for p in self.files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(default_loader(str(self.files[index]))), -1


class ImageFolderDataModule(SplitsDataModule):
    """`root/{train,val,test}/<class>/<image>`, or `root/<class>/<image>` split with a fixed seed.

    Images are read when drawn (in `num_workers` processes), so a folder of any size fits, and a
    run resumes mid-epoch exactly, augmentation included when it is drawn in workers; each
    is converted to RGB and brought to `image_size`: a random resized crop and a flip for
    training (with `augment`), a resize and a center crop otherwise. The model then applies
    its weights' preprocessing; the default 256 is what ResNet's weights resize to before their
    224 crop, which leaves that resize a no-op.
    """

    task: Task = "classification"

    def __init__(
        self,
        *,
        root: str,
        image_size: int = 256,
        augment: bool = True,
        policy: Policy | None = None,
        random_erasing: float = 0.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        predict: str | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: a folder with `train/` (and optionally `val/`, `test/`) class folders, or
                class folders directly.
            policy: after the crop and flip, one of torchvision's augmentation policies:
                trivial_augment (TrivialAugmentWide), rand_augment or auto_augment.
            random_erasing: then blank a random rectangle of an image with this probability.
            val_fraction, test_fraction: shares of the images held out, with `split_seed`, when
                `root` has no such subfolder (a missing `val/` is carved from `train/`).
            predict: a folder of images (no class folders) for `predict`; the test split if unset.
        """
        super().__init__(batch_size, **kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"image folder {root} not found")
        self.folders = {s: self.root / s for s in SPLITS if (self.root / s).is_dir()}
        if "train" not in self.folders:  # one folder of classes: every split comes from it
            self.folders = {}
        self.classes = class_names(self.folders.get("train", self.root))
        if not self.classes:
            raise UserError(f"{self.folders.get('train', self.root)} has no class subfolders")
        for folder in self.folders.values():
            if class_names(folder) != self.classes:
                raise UserError(
                    f"{folder} has classes {class_names(folder)}, train has {self.classes}"
                )
        if not 0 < val_fraction < 1:  # validation picks the checkpoints: it cannot be empty
            raise UserError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        if not 0 <= test_fraction < 1:
            raise UserError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
        self.image_size = image_size
        check_recipe(policy, random_erasing)
        self.augment = augment
        self.policy, self.random_erasing = policy, random_erasing
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed
        self.num_outputs = len(self.classes)
        self.input_size = (3, image_size, image_size)
        self.predict_images = (
            UnlabelledImages(Path(predict), self.transform(train=False)) if predict else None
        )

    def transform(self, train: bool) -> v2.Transform:
        size = self.image_size
        if train and self.augment:
            steps = [v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()]
        else:
            steps = [v2.Resize(size), v2.CenterCrop(size)]
        if train:
            steps += recipe_steps(self.policy, self.random_erasing)
        # uint8 tensors out: the model converts them, after the batch reached its device
        return v2.Compose([v2.ToImage(), *steps, v2.ToPureTensor()])

    def read(self, folder: Path, train: bool) -> ImageFolder:
        try:
            return ImageFolder(str(folder), transform=self.transform(train))
        except FileNotFoundError as error:  # a class folder without images
            raise UserError(f"{folder}: {error}") from None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.predict_images is not None:
            self.datasets["predict"] = self.predict_images
        if not self.folders:
            self.datasets.update(self.split_one_folder())
            return
        for split, folder in self.folders.items():
            self.datasets[split] = self.read(folder, train=split == "train")
        if "val" not in self.datasets:
            train, val = (
                self.read(self.folders["train"], True),
                self.read(self.folders["train"], False),
            )
            order = self.permutation(len(train))
            held = round(self.fractions["val"] * len(train))
            self.datasets["train"] = Subset(train, order[held:])
            self.datasets["val"] = Subset(val, order[:held])

    def split_one_folder(self) -> dict[str, Dataset]:
        train, other = self.read(self.root, True), self.read(self.root, False)
        order = self.permutation(len(train))
        sizes = {split: round(fraction * len(train)) for split, fraction in self.fractions.items()}
        val, test = order[: sizes["val"]], order[sizes["val"] : sizes["val"] + sizes["test"]]
        rest = order[sizes["val"] + sizes["test"] :]
        return {
            "train": Subset(train, rest),
            "val": Subset(other, val),
            "test": Subset(other, test),
        }

    def permutation(self, n: int) -> list[int]:
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()

    def _loader(
        self,
        split: str,
        shuffle: bool = False,
        drop_last: bool = False,
        sampler: Sampler | None = None,
    ) -> DataLoader:
        if not len(self.datasets.get(split, ())):
            raise UserError(f"{self.root} has no {split} images")
        dataset = self.datasets[split]
        # as batch_loader does: a seeded order and the position in the checkpoint, so that a
        # mid-epoch resume is exact; the skipped batches are read again (their augmentation,
        # drawn in the workers, then repeats), not a sampler's shuffle=False that DDP would keep
        return ResumableLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=SeededShuffle(dataset) if shuffle else sampler,
            drop_last=drop_last,
            **self.loader_options,
        )
