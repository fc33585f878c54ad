"""gc: free what nothing reachable (or recently reachable) needs."""

from __future__ import annotations

import math
import time

from strongroom.errors import InputError
from strongroom.service.context import Session, audited
from strongroom.service.results import GcResult
from strongroom.store import gc as store_gc
from strongroom.store import leftovers, lock
from strongroom.store.refs import Refs

DAY_NS = 86_400 * 1_000_000_000


@audited("gc", keep_unreachable_days="keep_unreachable_days", dry_run="dry_run")
def gc(session: Session, keep_unreachable_days: float = 14, dry_run: bool = False, wait: float = 0.0) -> GcResult:
    if not math.isfinite(keep_unreachable_days) or not 0 <= keep_unreachable_days <= 36500:
        raise InputError("--keep-unreachable takes a number of days from 0 to 36500")
    repo = session.open()
    keep_ns = int(keep_unreachable_days * DAY_NS)
    now = time.time_ns()
    freed = 0
    with lock.publish_lock(repo.backend, "gc", wait):
        p = store_gc.plan(repo, keep_ns, now)
        if not dry_run and (p.packs_dead or p.packs_repack):
            with lock.exclusive_lock(repo.backend, "gc"):
                freed = store_gc.sweep(repo, p, keep_ns, now)
        # Temporary files of killed writes: only those abandoned for an hour, which no lock needs to protect.
        temporaries = leftovers.remove_abandoned(repo.backend, now, dry_run)
    if not dry_run and p.reflog_dropped:

        def trim(refs: Refs) -> None:
            refs.reflog = [c for c in refs.reflog if c.time_ns >= now - keep_ns]

        session.remember(repo, repo.edit_refs(trim, "gc", wait))
    return GcResult(
        dry_run=dry_run,
        packs_deleted=len(p.packs_dead),
        packs_repacked=len(p.packs_repack),
        objects_removed=p.objects_dead,
        bytes_removable=p.bytes_dead,
        bytes_freed=freed,
        live_objects=len(p.live),
        temporaries_removed=temporaries,
    )
