"""What Lightning prints that tells nothing about this project's runs, silenced one by one.

Each filter matches one message from one place, so that any other warning or line still shows. The
warnings a run itself caused are fixed where they arise instead (the `LastCheckpoint` callback
that `validate`/`test`/`predict` of a run's checkpoint missed: `ProjectCLI`).
"""

import logging
import warnings

from lightning.fabric.utilities.warnings import PossibleUserWarning

# lines Lightning logs at info level (through `rank_zero_info`) that help no one here: an
# advertisement on every Trainer without its LitLogger (2.6: logger_connector.py), and a TPU count
# on machines that have none; "GPU available" stays, it says whether a GPU was used
SILENCED_LINES = ("💡 Tip: For seamless cloud logging", "TPU available: False")
RANK_ZERO_LOG = logging.getLogger("lightning.pytorch.utilities.rank_zero")


def helpful(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(SILENCED_LINES)


def ignore_lightning_noise() -> None:
    if helpful not in RANK_ZERO_LOG.filters:
        RANK_ZERO_LOG.addFilter(helpful)
    # Lightning 2.6 builds torch's `LeafSpec`, which torch deprecated after it (a note to
    # Lightning's developers): printed by every run, whatever it does
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    # on any machine with Slurm installed, every run outside a Slurm job (a laptop-style run on a
    # login node); a job whose tasks were started without srun is refused by launch_checks
    warnings.filterwarnings(
        "ignore",
        message="The `srun` command is available on your system but is not used",
        category=PossibleUserWarning,
    )
    # Lightning's CLI calls jsonargparse functions that jsonargparse deprecated after it (hidden
    # unless warnings are turned on, e.g. `python -W always`)
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli"
    )
    # `validate`/`test`/`predict` of a run trained with EMA keep the run's callbacks: the
    # checkpoint's weights are already the average, which is what they should evaluate
    warnings.filterwarnings(
        "ignore",
        message="You're using the WeightAveraging callback, but loading a checkpoint outside",
    )
