"""Timing and memory of bench rows: peak resident memory while a block runs, and rows
measured round-robin (median, spread, page faults)."""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Callable

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MB


class PeakMemory:
    """Highest resident memory of this process while the block runs (polled every 5 ms)."""

    def __enter__(self) -> PeakMemory:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def measure_rows(runs: list[tuple[str, Callable[[], object], int]], slices: int) -> list[dict]:
    """Time ``(name, run, repeats)`` rows round-robin after one warm-up each, so that a slow
    phase of a shared machine hits every row alike; median, spread and peak memory."""
    for _, run, _ in runs:
        run()
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    faults: dict[str, list[int]] = {name: [] for name, _, _ in runs}
    peaks: dict[str, float] = {name: 0.0 for name, _, _ in runs}
    for round_index in range(max(repeats for _, _, repeats in runs)):
        for name, run, repeats in runs:
            if round_index >= repeats:
                continue
            with PeakMemory() as memory:
                first_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
                faults[name].append(
                    resource.getrusage(resource.RUSAGE_SELF).ru_minflt - first_faults
                )
            peaks[name] = max(peaks[name], memory.peak)
    rows = []
    for name, _, _ in runs:
        times = seconds[name]
        median = statistics.median(times)
        row = {
            "name": name,
            "median_s": median,
            "min_s": min(times),
            "max_s": max(times),
            "slices_per_second": slices / median,
            "peak_rss_mb": peaks[name],
            "page_faults": int(statistics.median(faults[name])),
            "runs": len(times),
        }
        print(
            f"  {name:<50} {median:7.2f} s  [{min(times):.2f}-{max(times):.2f}]"
            f"  {row['slices_per_second']:6.1f} slices/s  {row['peak_rss_mb']:6.0f} MB"
            f"  {row['page_faults']:8d} page faults",
            flush=True,
        )
        rows.append(row)
    return rows
