"""Reads a W&B offline run (`wandb/offline-run-*/run-*.wandb`) back: its records are W&B's
protobuf `Record`s in LevelDB's log format (32 KiB blocks; each chunk: CRC32 (4 bytes), length
(2), type (1): 1 whole, 2 first, 3 middle, 4 last), after a 7-byte header (":W&B", magic,
version). wandb 0.31 ships no reader of its own (its Go core writes the file)."""

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER, CHUNK_HEADER = 32768, 7, 7


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    found, pending, offset = [], b"", HEADER
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:  # a block's tail too short for a chunk: padding
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        payload = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def history(run: Path) -> list[dict[str, object]]:
    """The run's logged rows (`wandb.log`), each `{key: value}` with values decoded."""
    (file,) = run.glob("run-*.wandb")
    rows = []
    for record in records(file):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})  # fmt: skip
    return rows


def config(run: Path) -> dict[str, object]:
    """The run's config (`wandb.config`, where Lightning's `log_hyperparams` puts values)."""
    (file,) = run.glob("run-*.wandb")
    values: dict[str, object] = {}
    for record in records(file):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def written(run: Path, timeout: float = 60) -> Path:
    """`run` once its file ends in the `exit` record: wandb's core process writes it after
    `wandb.finish()` has returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(run.glob("run-*.wandb"))
        if files and any(r.WhichOneof("record_type") == "exit" for r in records(files[0])):
            return run
        time.sleep(0.5)
    raise AssertionError(f"{run} has no exit record after {timeout} s")
