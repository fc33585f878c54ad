"""Run one command, time it and sample the memory of its whole process tree.

Method: a background thread wakes every ``interval`` seconds (20 ms by default), lists /proc, learns the parent of
every process it has not seen yet (from /proc/PID/stat), walks the tree down from the command's PID and sums the
resident set size (/proc/PID/statm) of the command and all its live descendants. The peak of that sum is reported.

Caveats, all documented in the results: RSS counts pages shared between processes (forked workers sharing
copy-on-write pages, shared libraries) once per process, so the sum over-states real use a little (it is the
conservative figure); a process that lives for less than one interval can be missed; a process that is re-parented
away from the tree (daemonised) stops being counted. As a cross-check the largest single-process peak RSS (VmHWM,
a high-water mark kept by the kernel, so it misses nothing but the last interval) is reported too. ``ru_maxrss``
from wait4 is not used for this: Linux folds the forking parent's (the harness's) RSS into it at exec.

It also measures the command's CPU time (wait4) and the machine-wide busy CPU time (/proc/stat) over the run; the
difference, less the sampler thread's own CPU time, is "foreign" load: other processes competing for the CPUs during
the measurement (on a shared machine, other people's test runs).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE")


def _read_ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ..." - comm may hold spaces and parentheses, so split after the last ')'
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def _read_mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes; zeros for a process that is gone (or a zombie)."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
    except (OSError, IndexError, ValueError):
        pass
    return rss, hwm


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU time (all CPUs) from /proc/stat: everything but idle and iowait."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


class TreeSampler(threading.Thread):
    def __init__(self, root: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self.max_hwm = 0
        self.own_cpu = 0.0
        self._ppid: dict[int, int] = {}
        self._halt = threading.Event()

    def sample(self) -> None:
        try:
            live = [int(e) for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            return
        children: dict[int, list[int]] = {}
        for pid in live:
            ppid = self._ppid.get(pid)
            if ppid is None:
                got = _read_ppid(pid)
                if got is None:
                    continue
                self._ppid[pid] = ppid = got
            children.setdefault(ppid, []).append(pid)
        tree = [self.root]
        i = 0
        while i < len(tree):
            tree.extend(children.get(tree[i], ()))
            i += 1
        total = 0
        for p in tree:
            rss, hwm = _read_mem(p)
            total += rss
            if hwm > self.max_hwm:
                self.max_hwm = hwm
        self.samples += 1
        if total > self.peak:
            self.peak = total
            self.peak_procs = len(tree)

    def run(self) -> None:
        c0 = time.thread_time()
        self.sample()
        while not self._halt.wait(self.interval):
            self.sample()
        self.own_cpu = time.thread_time() - c0

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Measured:
    argv: list[str]
    rc: int
    seconds: float
    peak_tree_rss: int  # bytes, peak of the summed RSS of the process tree
    peak_tree_procs: int  # processes alive at that peak
    max_single_rss: int  # bytes, largest VmHWM (peak RSS) seen of any one process in the tree
    samples: int
    cpu_seconds: float  # user + system CPU of the command and the children it waited for (wait4)
    foreign_cpu_seconds: float  # machine-wide busy CPU during the run minus the command's own: other load

    def to_json(self) -> dict[str, object]:
        return {
            "argv": self.argv,
            "rc": self.rc,
            "seconds": round(self.seconds, 4),
            "peak_tree_rss": self.peak_tree_rss,
            "peak_tree_procs": self.peak_tree_procs,
            "max_single_rss": self.max_single_rss,
            "samples": self.samples,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "foreign_cpu_seconds": round(self.foreign_cpu_seconds, 3),
        }


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    log_path: str,
    interval: float = 0.02,
) -> Measured:
    """Run argv (stdin /dev/null, output appended to log_path); wall time from spawn to reap."""
    with open(log_path, "ab") as log:
        log.write(f"\n$ (cd {cwd} && {' '.join(argv)})\n".encode())
        log.flush()
        busy0 = cpu_busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        busy = cpu_busy_seconds() - busy0
        sampler.stop()
        cpu = usage.ru_utime + usage.ru_stime
        busy -= sampler.own_cpu
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        log.write(f"# rc={rc} wall={seconds:.3f}s peak_tree_rss={sampler.peak / 2**20:.1f}MiB\n".encode())
    return Measured(
        argv=list(argv),
        rc=rc,
        seconds=seconds,
        peak_tree_rss=sampler.peak,
        peak_tree_procs=sampler.peak_procs,
        max_single_rss=sampler.max_hwm,
        samples=sampler.samples,
        cpu_seconds=cpu,
        foreign_cpu_seconds=max(0.0, busy - cpu),
    )


def wait_quiet(max_wait: float, threshold_cores: float = 0.25, window: float = 1.0) -> tuple[float, float]:
    """Wait until the machine's busy CPU over one window is below threshold_cores (other helpers' tests, builds).

    Returns (seconds waited, busy cores in the last window). Gives up after max_wait seconds.
    """
    t0 = time.perf_counter()
    while True:
        b0, w0 = cpu_busy_seconds(), time.perf_counter()
        time.sleep(window)
        cores = (cpu_busy_seconds() - b0) / (time.perf_counter() - w0)
        waited = time.perf_counter() - t0
        if cores < threshold_cores or waited >= max_wait:
            return waited, cores
