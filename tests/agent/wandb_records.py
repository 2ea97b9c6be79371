"""The records of a W&B offline run file (run-ID.wandb), decoded with wandb's own protobuf
classes (wandb.proto.wandb_internal_pb2.Record). wandb 0.31 no longer ships its Python
reader of these files (wandb.sdk.internal.datastore: the Go core writes them now); the
framing is LevelDB's log format behind a 7-byte W&B header, as that reader read it:
32 KiB blocks of records, each `crc32 u32, length u16, type u8` (full, first, middle, last)
then its bytes, a block's tail of fewer than 7 bytes zero-padded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    out, pos, parts = [], HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero padding: the next block
            pos += left
            continue
        body = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, "bad checksum"
        pos += HEADER + length
        if kind == FULL:
            parts = [body]
        elif kind == FIRST:
            parts = [body]
            continue
        elif kind == MIDDLE:
            parts.append(body)
            continue
        else:
            parts.append(body)
        record = wandb_internal_pb2.Record()
        record.ParseFromString(b"".join(parts))
        out.append(record)
    return out
