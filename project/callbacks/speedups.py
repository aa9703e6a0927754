"""GPU settings that Trainer arguments do not cover: TF32 matmuls and channels-last CNNs."""

from typing import Literal

import torch
from lightning import Callback, LightningModule, Trainer


class GPUSpeedups(Callback):
    """Applied once when a run starts (`configs/trainer/gpu.yaml` adds it).

    - `matmul_precision: high` lets float32 matmuls run on TensorFloat-32 tensor cores (Ampere
      and newer; 10 mantissa bits inside the product, float32 sums), as PyTorch already lets
      cuDNN convolutions do; `highest` turns TF32 off for both. Under bf16-mixed it covers what
      autocast leaves in float32.
    - `channels_last` stores 4-D weights as NHWC, the layout tensor cores read without
      transposing; convolutions then return NHWC too, so every layer after the first runs in it.
      Networks without 4-D weights (RNNs) are left as they are.
    """

    def __init__(
        self,
        matmul_precision: Literal["highest", "high", "medium"] = "high",
        channels_last: bool = True,
    ) -> None:
        self.matmul_precision = matmul_precision
        self.channels_last = channels_last

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.backends.cudnn.allow_tf32 = self.matmul_precision != "highest"
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
