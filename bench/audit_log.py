"""Audit log benchmark: batch append rate, `verify` over N events, proof sizes (issue 5, T19 figures).

    .venv/bin/python bench/audit_log.py [N]      (default 100000)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from strongroom.audit.events import Event, utc_now
from strongroom.audit.log import AuditLog
from strongroom.core.merkle import MerkleTree, leaf_hash


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as d:
        log = AuditLog.open("sqlite:///" + os.path.join(d, "c.sqlite"), "ab" * 32)
        proto = Event(0, utc_now(), "carol", "carol", "host1", "cat", {"version": "cd" * 32, "paths": ["x/y.bin"]})
        batch = 1000
        t0 = time.perf_counter()
        for _ in range(n // batch):
            log.append([proto] * batch)
        dt = time.perf_counter() - t0
        print(f"append: {n} events in batches of {batch}: {dt:.2f}s = {n / dt:,.0f} events/s")
        t0 = time.perf_counter()
        rep = log.verify(None)
        print(f"verify (recompute every leaf and the tree from the catalog): {n} events in "
              f"{time.perf_counter() - t0:.2f}s (ok={rep.ok})")
    for size in (1_000, 1_000_000):
        tree = MerkleTree(leaf_hash(i.to_bytes(8, "big")) for i in range(size))
        incl = tree.inclusion_proof(size // 3)
        cons = tree.consistency_proof(size // 2)
        print(f"size {size:>9,}: inclusion proof {len(incl)} hashes = {32 * len(incl)} bytes; "
              f"consistency proof {len(cons)} hashes = {32 * len(cons)} bytes")


if __name__ == "__main__":
    main()
