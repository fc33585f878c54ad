#!/usr/bin/env python3
"""How much of the chunker secret matters: flip each bit of the 63-bit pyfastcdc seed and count how many
cut points change on random data (RELIABILITY.md T13). A bit that changes no cut point adds no secrecy.

    python bench/chunker_secrecy.py [MiB]      # default 64 MiB
"""

from __future__ import annotations

import os
import random
import sys

from strongroom.store.chunker import Chunker, ChunkerParams


def cuts(chunker: Chunker, data: bytes) -> set[int]:
    out, pos = set(), 0
    for c in chunker.cut(data):
        pos += len(c)
        out.add(pos)
    return out


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    data = random.Random(1).randbytes(mib << 20)
    params = ChunkerParams()
    seed = int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1)
    base = cuts(Chunker(params, seed), data)
    rows, effective = [], 0
    for bit in range(63):
        other = cuts(Chunker(params, seed ^ (1 << bit)), data)
        changed = 1 - len(base & other) / max(len(base), 1)
        effective += changed >= 0.4
        rows.append((bit, changed))
    print(f"{params.name}, {mib} MiB of random data, {len(base)} cut points")
    print("bit  cut points changed")
    for bit, changed in rows:
        print(f"{bit:3d}  {changed:6.1%}")
    print(f"bits that change at least 40% of cut points: {effective} of 63")


if __name__ == "__main__":
    main()
