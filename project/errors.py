"""The project's errors, and the exceptions behind one."""

from collections import deque
from collections.abc import Iterator


class UserError(ValueError):
    """A mistake in a config, a flag or a data file, reported as one line instead of a traceback."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops before a checkpoint takes the bad weights."""


def chain_of(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and every exception behind it (causes, contexts and the members of a group),
    outermost first, each once: a chain can be a cycle (an exception re-raised by a thread into
    the code that handles it), where following `__context__` alone never ends."""
    seen: set[int] = set()
    waiting = deque([error])
    while waiting:
        current = waiting.popleft()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # an ExceptionGroup's members (a builtin from Python 3.11; the project supports 3.10)
        members = getattr(current, "exceptions", ())
        if isinstance(members, tuple):
            waiting.extend(m for m in members if isinstance(m, BaseException))
        waiting.extend((current.__cause__, current.__context__))
