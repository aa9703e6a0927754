"""`config.yaml` in the run folder, and the config in TensorBoard's text tab."""

from lightning import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from project.cli.provenance import save_provenance
from project.cli.run_folder import without_run_identity
from project.runs import holds


class RunConfigFile(SaveConfigCallback):
    """Saves `config.yaml` when a run is fitted, and shows it in TensorBoard's text tab.

    `validate`/`test`/`predict` of an existing run log into that run's folder
    (`project.cli.run_folder.use_run_folder`), so they must not replace the config that
    trained it.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # a run resumed in its own folder (`fit -c <run>/config.yaml --ckpt_path last`) keeps
        # the config and the config text it was started with
        ckpt_path = self.config.get("ckpt_path")
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        resumed = ckpt_path and log_dir and holds(log_dir, ckpt_path)
        if stage == "fit" and not resumed:
            self.config = without_run_identity(self.config)
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        save_provenance(trainer)  # provenance.json beside config.yaml, and in the text tab
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = self.parser.dump(self.config, skip_unset=False)
            # four leading spaces: TensorBoard renders the text as markdown, this keeps it verbatim
            experiment.add_text("config", "    " + text.replace("\n", "\n    "))
