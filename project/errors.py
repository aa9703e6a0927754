class UserError(ValueError):
    """A mistake in a config, a flag or a data file, reported as one line instead of a traceback."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops before a checkpoint takes the bad weights."""
