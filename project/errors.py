class UserError(ValueError):
    """A mistake in a config, a flag or a data file, reported as one line instead of a traceback."""
