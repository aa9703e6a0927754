"""Which errors mean another process of the run was killed, and the one line for them
(project/crashes.py); tests/test_process_deaths.py kills real processes."""

from pathlib import Path

import pytest
import torch

from project.crashes import crash_line, what_crashed

WORKER_ERRORS = [
    "DataLoader worker (pid 4242) is killed by signal: Killed. ",
    "DataLoader worker (pid 7) is killed by signal: Terminated. ",
    "DataLoader worker (pid(s) 4242, 4243) exited unexpectedly",
]
PEER_ERRORS = [
    "[../gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:20868: Connection reset by peer. "
    "This is typically caused by a remote worker hanging",
    "[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1698",
]


def wrapped(error: BaseException, depth: int, cycle: bool) -> BaseException:
    """`error` as the cause of `depth` others (Lightning and jsonargparse wrap what they catch),
    the outermost of which, with `cycle`, is also the innermost's context."""
    outer = error
    for level in range(depth):
        wrapper = RuntimeError(f"while running level {level}")
        wrapper.__cause__ = outer
        outer = wrapper
    if cycle:
        error.__context__ = outer
    return outer


@pytest.mark.parametrize("message", WORKER_ERRORS)
@pytest.mark.parametrize("depth", [0, 1, 5])
@pytest.mark.parametrize("cycle", [False, True])
def test_a_dead_dataloader_worker_is_one_line(message: str, depth: int, cycle: bool) -> None:
    inner = RuntimeError(message)
    inner.add_note(
        "resume: python -m project fit -c logs/gru/version_3/config.yaml --ckpt_path last"
    )
    line = crash_line(wrapped(inner, depth, cycle))
    assert line is not None and "\n" not in line
    pid = message.split(")")[0].split()[-1]
    assert line.startswith("error: DataLoader worker (pid") and pid in line
    assert line.endswith("; resume: python -m project fit -c logs/gru/version_3/config.yaml "
                         "--ckpt_path last")  # fmt: skip


@pytest.mark.parametrize("message", PEER_ERRORS)
def test_a_lost_rank_is_named_only_inside_a_process_group(message: str, tmp_path: Path) -> None:
    error = wrapped(RuntimeError(message), 2, cycle=True)
    assert what_crashed(error) is None  # no process group: not a DDP run
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        line = crash_line(error)
    finally:
        torch.distributed.destroy_process_group()
    assert line is not None and line.startswith("error: rank 0 of 1 lost another rank (Connection")


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA out of memory"),
        ValueError("DataLoader worker count must be positive"),
        KeyboardInterrupt(),
        wrapped(OSError(28, "No space left on device"), 3, cycle=True),
    ],
    ids=["other-runtime", "worker-word", "interrupt", "disk-full-cycle"],
)
def test_other_errors_are_left_alone(error: BaseException) -> None:
    assert crash_line(error) is None
