"""The error reporter (`python -m project`'s one-line errors) over exception chains of every
shape: cycles, long chains, ExceptionGroups nested in each other. It must end, find the user's
mistake nearest the outermost exception, and report a full disk as one line from any thread."""

import builtins
import errno
import random
import threading
from collections import deque

import pytest

from project.cli import command
from project.cli.errors import user_error_in
from project.errors import UserError, chain_of
from project.files import EXIT_CODE

GROUP = getattr(builtins, "ExceptionGroup", None)  # Python 3.11 and later


def ended_within(seconds: float, function, *args):  # noqa: ANN001, ANN202
    """`function(*args)`, failing the test (instead of hanging it) when it runs longer."""
    result: list = []

    def call() -> None:
        try:
            result.append((function(*args), None))
        except BaseException as error:  # noqa: BLE001 (raised again in the test's thread)
            result.append((None, error))

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{function.__name__} did not end within {seconds} s"
    value, raised = result[0]
    if raised is not None:
        raise raised
    return value


def random_graph(seed: int) -> tuple[BaseException, dict[int, list[BaseException]]]:
    """Exceptions linked at random through `__cause__`, `__context__` and group members, with
    cycles; some are UserErrors. Returns the outermost and each one's links, as built."""
    rng = random.Random(seed)
    size = rng.choice([1, 2, 5, 30, 200])
    nodes: list[BaseException] = []
    for k in range(size):
        kind = rng.random()
        if kind < 0.15:
            nodes.append(UserError(f"mistake {k}"))
        elif kind < 0.3:
            nodes.append(OSError(errno.ENOSPC, "No space left on device"))
        else:
            nodes.append(RuntimeError(f"error {k}"))
    links: dict[int, list[BaseException]] = {id(n): [] for n in nodes}
    for k, node in enumerate(nodes):
        node.__cause__ = rng.choice([None, None, *nodes])  # any node: cycles and self-loops
        node.__context__ = rng.choice([None, nodes[(k + 1) % size], *nodes])
        links[id(node)] += [node.__cause__, node.__context__]
    groups = []
    # groups of groups: nested, and in the chain too
    for _ in range(rng.randrange(3) if GROUP else 0):
        members = rng.sample(nodes + groups, k=min(len(nodes + groups), rng.randint(1, 3)))
        members = [m for m in members if isinstance(m, Exception)]
        if not members:
            continue
        group = GROUP("group", members)
        group.__context__ = rng.choice([None, *nodes])
        links[id(group)] = [*members, group.__context__]
        groups.append(group)
    outermost = rng.choice(nodes + groups)
    return outermost, links


def distances(outermost: BaseException, links: dict) -> dict[int, tuple[int, BaseException]]:
    """How many links separate each reachable exception from the outermost (breadth-first)."""
    found = {id(outermost): (0, outermost)}
    waiting = deque([outermost])
    while waiting:
        node = waiting.popleft()
        for nxt in links.get(id(node), []):
            if nxt is not None and id(nxt) not in found:
                found[id(nxt)] = (found[id(node)][0] + 1, nxt)
                waiting.append(nxt)
    return found


@pytest.mark.parametrize("seed", range(300))
def test_the_nearest_mistake_is_found_in_chains_of_any_shape(seed: int) -> None:
    outermost, links = random_graph(seed)
    reachable = distances(outermost, links)
    found = ended_within(5, user_error_in, outermost)
    mistakes = [d for d, e in reachable.values() if isinstance(e, UserError)]
    if not mistakes:
        assert found is None
        return
    assert isinstance(found, UserError)
    assert reachable[id(found)][0] == min(mistakes)
    # every exception behind the outermost is visited once
    visited = ended_within(5, lambda e: list(chain_of(e)), outermost)
    assert sorted(map(id, visited)) == sorted(reachable)


def test_a_chain_of_a_hundred_thousand_ends() -> None:
    error: BaseException = RuntimeError("first")
    for k in range(100_000):
        newer = RuntimeError(f"error {k}")
        newer.__context__ = error
        error = newer
    assert ended_within(10, user_error_in, error) is None


def cyclic(error: BaseException) -> BaseException:
    """`error` inside a RuntimeError whose context leads back to it: the shape TensorBoard's
    writer thread leaves when it re-raises its error into the code that handles it."""
    outer = RuntimeError("while stopping the run")
    outer.__context__ = error
    error.__context__ = outer
    return outer


def raising(error: BaseException):  # noqa: ANN202
    def make_cli(args: object = None) -> None:
        raise error

    return make_cli


def test_a_full_disk_in_a_cyclic_chain_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    disk = OSError(errno.ENOSPC, "No space left on device", "logs/x/last.ckpt")
    monkeypatch.setattr(command, "make_cli", raising(cyclic(disk)))
    with pytest.raises(SystemExit) as stopped:
        ended_within(10, command.main, ["fit"])
    assert stopped.value.code == EXIT_CODE
    err = capsys.readouterr().err
    assert err == "error: cannot write logs/x/last.ckpt: No space left on device (ENOSPC)\n"


def test_an_unknown_error_in_a_cyclic_chain_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(command, "make_cli", raising(cyclic(KeyError("bug"))))
    with pytest.raises(RuntimeError, match="while stopping the run"):
        ended_within(10, command.main, ["fit"])


def test_a_thread_that_dies_of_a_full_disk_prints_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A writer thread dies (as TensorBoard's does) while the run itself ends: one line."""

    def make_cli(args: object = None) -> None:
        def write() -> None:
            raise OSError(errno.ENOSPC, "No space left on device", "logs/x/events.out")

        thread = threading.Thread(target=write)
        thread.start()
        thread.join()

    monkeypatch.setattr(command, "make_cli", make_cli)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored afterwards
    with pytest.raises(SystemExit) as stopped:
        command.main(["fit"])
    assert stopped.value.code == EXIT_CODE
    err = capsys.readouterr().err
    assert err == "error: cannot write logs/x/events.out: No space left on device (ENOSPC)\n"
