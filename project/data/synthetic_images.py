"""Random images kept on the training device: what the model and the GPU can do, data aside."""

import torch
from torch.utils.data import TensorDataset

from project.data.images import ImageDataModule, labelled_images
from project.errors import UserError


class SyntheticImagesDataModule(ImageDataModule):
    """Random uint8 images with random labels (nothing to learn), drawn once with a fixed seed.

    With `on_device: true` the tensors move to the training device before the first batch, so
    batches are indexed there and never cross from host memory: a throughput measurement of the
    model, the precision and the GPU alone (`configs/image/resnet50_throughput.yaml`).
    """

    def __init__(
        self,
        *,
        num_samples: int = 2560,
        image_size: int = 224,
        channels: int = 3,
        num_classes: int = 1000,
        on_device: bool = True,
        seed: int = 0,
        batch_size: int = 128,
    ) -> None:
        """
        Args:
            num_samples: images drawn for training, a tenth of them held out for validation;
                another tenth for testing. uint8: 10240 of 3×224×224 hold 1.5 GB.
            on_device: keep them on the GPU (or whatever device the run trains on).
        """
        super().__init__(batch_size, augment=False)
        if num_samples < 2 or image_size < 1 or channels < 1 or num_classes < 1:
            raise UserError(
                "data.num_samples must be >= 2 and image_size, channels, num_classes >= 1"
            )
        self.num_samples, self.seed, self.on_device = num_samples, seed, on_device
        self.num_outputs = num_classes
        self.input_size = (channels, image_size, image_size)

    def load(self) -> dict[str, TensorDataset]:
        generator = torch.Generator().manual_seed(self.seed)
        count = self.num_samples + max(1, self.num_samples // 10)  # train, then test
        shape = (count, *self.input_size)
        images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, self.num_outputs, (count,), generator=generator)
        n = self.num_samples
        return {
            "train": labelled_images(images[:n], labels[:n]),
            "test": labelled_images(images[n:], labels[n:]),
        }

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.on_device and self.trainer is not None:
            self.move_to(self.trainer.strategy.root_device)

    def move_to(self, device: torch.device) -> None:
        """Keeps every split on `device`: batches are then indexed there."""
        for split, dataset in self.datasets.items():
            self.datasets[split] = TensorDataset(*(t.to(device) for t in dataset.tensors))
