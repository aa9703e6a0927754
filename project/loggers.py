"""Lightning's TensorBoard logger, with version folders that two runs can never share."""

import os

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class TensorBoardLogger(LightningTensorBoardLogger):
    """Claims `version_N` by creating it, so runs started at the same moment get separate folders.

    Lightning picks "highest existing version + 1", which two processes starting together both
    pick. `os.mkdir` succeeds for exactly one of them; the other moves on to the next number.
    Only rank 0 claims: the other ranks of a DDP run receive rank 0's folder from Lightning.
    """

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0 or "://" in self.root_dir:  # remote storage: Lightning's way
            return version
        os.makedirs(self.root_dir, exist_ok=True)
        while True:
            try:
                os.mkdir(os.path.join(self.root_dir, f"version_{version}"))
                return version
            except FileExistsError:
                version += 1
