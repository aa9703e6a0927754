"""Notes the command line's parsing took (the settings a switched class kept:
project/cli/carried_settings.py), printed once the run starts, so that a mistake found before
then is still the one line of its error."""

import sys

from lightning import Callback, LightningModule, Trainer

NOTES: list[str] = []  # of the latest parse; printed and emptied by CarriedSettingsNote


class CarriedSettingsNote(Callback):
    """Prints, as the run starts, the notes of the latest parse (once, from the first process)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            for note in NOTES:
                print(f"note: {note}", file=sys.stderr)
        NOTES.clear()  # `make train`'s validate and test after the fit: said once
