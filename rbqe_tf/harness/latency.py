"""Timing statistics, peak memory, the CPU and a progress line for the benchmark harness
(standard library + NumPy only, so it runs wherever the runner runs)."""
import os
import platform
import re
import resource
import sys
import time

import numpy as np


def stats_ms(seconds):
    """Summary in ms of a list of durations in seconds: runs, min, median, p90, mean."""
    ms = 1e3 * np.asarray(seconds, np.float64)
    return {"runs": int(ms.size), "min_ms": float(ms.min()), "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "mean_ms": float(ms.mean())}


def round_robin_seconds(calls, runs, warmup):
    """``calls``: name → no-argument callable. Runs each ``warmup`` times, then ``runs``
    timed rounds in which every callable runs once (so all see the same background
    load) → name → list of durations in seconds."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def time_round_robin(calls, runs, warmup):
    """:func:`round_robin_seconds` → name → :func:`stats_ms`."""
    return {name: stats_ms(t) for name, t in round_robin_seconds(calls, runs, warmup).items()}


def cpu_info():
    """{"model", "cpus", "flags"}: the CPU's model name (``/proc/cpuinfo``, else what
    ``platform`` knows) and the SIMD flags that decide which kernels XNNPACK picks."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    name = re.search(r"model name\s*:\s*(.+)", text)
    flags = set((re.search(r"flags\s*:\s*(.+)", text) or [None, ""])[1].split())
    return {"model": name.group(1) if name else platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "flags": sorted(flags & {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                     "avx512_bf16", "amx_int8"})}


def peak_rss_mb(status_path="/proc/self/status"):
    """Peak resident memory of this process in MiB and where it came from, or (None, why)."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM (/proc/self/status)"
    except OSError:
        pass
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (AttributeError, OSError):
        return None, "not reported by this OS"
    # ru_maxrss is in KiB on Linux/Android, bytes on macOS.
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024), "getrusage ru_maxrss"


class Progress:
    """One progress line on a terminal (rewritten in place), plain lines otherwise."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()

    def step(self, label):
        self.done += 1
        line = (f"[{self.done}/{self.total}] {time.perf_counter() - self.start:6.0f} s  {label}")
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
