"""`TensorBoardFigures`: the confusion matrix and sample predictions (project/figures.py draws
them) in TensorBoard, at the end of each validation and test."""

from lightning import Callback, LightningModule, Trainer

from project.figures import draw_confusion, draw_predictions


class TensorBoardFigures(Callback):
    """Draws a model's pictures into TensorBoard at the end of each validation and test: the
    confusion matrix the model accumulated in `confusion` (classification), and with
    `predictions` the split's first images with their predicted and true labels (the same images
    at every validation, so a run's grids show what it learned when); by default when the inputs
    are images (a batch whose first tensor has 4 dimensions) of a model of this template."""

    def __init__(self, predictions: bool | None = None) -> None:
        self.predictions = predictions

    def draws_predictions(self, pl_module: LightningModule, batch: tuple) -> bool:
        if self.predictions is not None:
            return self.predictions
        images = isinstance(batch, list | tuple) and getattr(batch[0], "ndim", 0) == 4
        return images and hasattr(pl_module, "task")  # labelled as this template's models do

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: tuple,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        drawn = batch_idx == 0 and not trainer.sanity_checking
        if drawn and self.draws_predictions(pl_module, batch):
            draw_predictions(trainer, pl_module, batch, "val")

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: tuple,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if batch_idx == 0 and self.draws_predictions(pl_module, batch):
            draw_predictions(trainer, pl_module, batch, "test")

    # Lightning calls these before the model's own hooks, which log the epoch's metrics (and,
    # while sanity checking, reset the confusion matrix undrawn)
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            draw_confusion(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        draw_confusion(trainer, pl_module, "test")
