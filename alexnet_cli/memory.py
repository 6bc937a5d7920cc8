"""glibc heap tuning for the CPU: large batches without page faults, workers without copies."""

from __future__ import annotations

import ctypes


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def keep_freed_memory() -> None:
    """Ask glibc to keep large freed blocks instead of returning them to the OS. Otherwise each
    batch's tensors (tens of MB) are fresh mmaps, and on the CPU filling them page-faults
    (docs/benchmarks.md, "keep_freed_memory")."""
    libc = _libc()
    if libc is not None:
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)


def release_free_heap() -> None:
    """Give the heap memory glibc keeps after frees back to the OS. Done before forking loader
    workers: `keep_freed_memory` lets the main process keep up to 1 GiB of freed heap, and each
    worker forked from it would inherit those pages and, as the main process reuses them, end
    up with its own copy (workers' memory growing by 1-2 GiB over 10 epochs;
    benchmarks/loader_rss.py)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
