"""W&B's local run files (`run-<id>.wandb`), read without a server: the steps a run already logged.

A .wandb file is W&B's record log: a 7-byte header (b":W&B", 0xBEE1, version 0), then 32 KiB blocks of
records, each a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last; a block's tail
shorter than 7 bytes is padding) and a piece of one protobuf `Record` (wandb.proto.wandb_internal_pb2).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[bytes]:
    """Every record's bytes in a .wandb file, in order (a record cut short by a kill is left out)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:                                     # the block's padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:                                         # zeros: the rest of the block is empty
            pos += left
            continue
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if len(payload) < length:
            break
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pieces = payload
        elif kind == MIDDLE:
            pieces += payload
        elif kind == LAST:
            yield pieces + payload


def history(folder: Path, run_id: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(step, {key: JSON value}) of every history row of W&B run `run_id` in `folder` (a wandb/ dir), in
    the order of its files' creation."""
    from wandb.proto import wandb_internal_pb2 as pb

    for path in sorted(folder.glob(f"*-{run_id}/run-{run_id}.wandb")):
        for raw in records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "history":
                yield record.history.step.num, {i.key or "/".join(i.nested_key): i.value_json
                                                for i in record.history.item}


def logged_steps(folder: Path, run_id: str, metric: str = "osp/accuracy") -> list[int]:
    """Every step at which W&B run `run_id` logged `metric` in `folder` (any number of run files)."""
    return [step for step, row in history(folder, run_id) if metric in row] if folder.is_dir() else []
