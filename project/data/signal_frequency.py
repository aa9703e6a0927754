"""A regression task with a known answer: read the frequency of a noisy sine wave.

Each sample is `sin(2π·f·t + phase) + noise` over a random number of steps (so batches are
padded and carry lengths); the target is `10·f`, the number of cycles per 10 steps. Predicting
the mean scores an MSE equal to the target variance, `(2.5 - 0.5)² / 12 ≈ 0.333`.
"""

from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import TensorDataset

from project.data.sequences import SequenceDataModule


def sine_waves(
    count: int, min_length: int, max_length: int, noise: float, seed: int
) -> TensorDataset:
    """`count` padded waves `(count, max_length, 1)`, their targets and their true lengths."""
    rng = np.random.default_rng(seed)
    frequency = rng.uniform(0.05, 0.25, count)  # cycles per step: 4 to 20 steps per cycle
    phase = rng.uniform(0, 2 * np.pi, count)
    lengths = rng.integers(min_length, max_length + 1, count)
    waves = [
        np.sin(2 * np.pi * f * np.arange(n) + p) + noise * rng.standard_normal(n)
        for f, p, n in zip(frequency, phase, lengths, strict=True)
    ]
    x = pad_sequence([torch.tensor(w, dtype=torch.float32) for w in waves], batch_first=True)
    if x.shape[1] < max_length:
        x = torch.nn.functional.pad(x, (0, max_length - x.shape[1]))
    y = torch.tensor(10 * frequency, dtype=torch.float32)
    return TensorDataset(x.unsqueeze(-1), y, torch.as_tensor(lengths))


class SignalFrequencyDataModule(SequenceDataModule):
    """Variable-length noisy sine waves; the target is the frequency (cycles per 10 steps)."""

    input_size = 1
    num_outputs = 1
    task = "regression"

    def __init__(
        self,
        *,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 1000,
        min_length: int = 20,
        max_length: int = 60,
        noise: float = 0.3,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            min_length, max_length: range of sequence lengths; shorter ones are zero-padded.
            noise: standard deviation of the Gaussian noise added to each step.
            seed: the data's seed; each split uses its own stream derived from it.
        """
        super().__init__(**kwargs)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.shape = (min_length, max_length, noise)
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        for offset, (split, count) in enumerate(self.sizes.items()):
            if split not in self.datasets:
                self.datasets[split] = sine_waves(count, *self.shape, seed=self.seed * 10 + offset)
