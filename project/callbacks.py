"""Callbacks every run gets."""

import json
from pathlib import Path

from lightning import Callback, LightningModule, Trainer


class MetricsFile(Callback):
    """Keeps `<log_dir>/metrics.json`: the latest val and test metrics, one flat JSON object.

    Written after fit (the last validation), after `validate` and after `test`; later values
    replace earlier ones under the same name, so after `make train` the file holds the best
    checkpoint's val and test metrics.
    """

    def _write(self, trainer: Trainer, prefixes: tuple[str, ...]) -> None:
        if not trainer.is_global_zero or trainer.log_dir is None or trainer.sanity_checking:
            return
        path = Path(trainer.log_dir) / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        metrics.update(
            {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith(prefixes)}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, ("val/",))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.training and trainer.state.fn == "validate":
            self._write(trainer, ("val/",))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, ("test/",))
