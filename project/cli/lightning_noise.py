"""Warnings of Lightning's that say nothing about this project's runs, silenced one by one.

Each filter matches one message from one place, so that any other warning still shows. The
warnings a run itself caused are fixed where they arise instead (the `LastCheckpoint` callback
that `validate`/`test`/`predict` of a run's checkpoint missed: `ProjectCLI`).
"""

import warnings

from lightning.fabric.utilities.warnings import PossibleUserWarning


def ignore_lightning_noise() -> None:
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
