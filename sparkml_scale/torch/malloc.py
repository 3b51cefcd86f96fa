"""glibc ``malloc`` thresholds for torch on CPU in long-lived processes (Spark's Python workers).

Why: every layer of a forward (and backward) pass allocates its output afresh; a CNN batch of 256
Fashion-MNIST images makes about 40 MB of activations.  glibc gives freed heap memory back to the
kernel as soon as more than ``M_TRIM_THRESHOLD`` bytes sit free at the heap's top (dynamically
2x the largest freed block, 25.6 MB for that CNN), so the next batch takes a page fault on every
4 KiB page it writes again.  Measured in a plain Python process (2-core EPYC, torch 2.13 CPU,
small_cnn width 16, batch 256): one torch thread, 10,000 images: 1.28 s a pass, 0.72 s with the
thresholds pinned; two threads, 20,000 images: 0.98 -> 0.73 s; one training epoch of 10,000 images
(batch 64, Adam): 0.90 -> 0.57 s.  In a Spark Python worker the unpinned state depends on what the
worker freed before (a large freed block raises glibc's dynamic thresholds): unpinned, one worker
read 0.89-0.96 s per 10,000 images where its sibling read 0.70-0.73 s; pinning removes that
dependence rather than adding speed to a worker already in the fast state.  The usual cure is
another allocator (jemalloc, tcmalloc) by ``LD_PRELOAD``, which a library cannot do to Spark's
Python workers; ``mallopt`` is the same cure inside the process.

:func:`pin_malloc_thresholds` sets ``M_MMAP_THRESHOLD`` to 32 MiB (glibc's own upper bound for its
dynamic threshold on 64-bit, ``DEFAULT_MMAP_THRESHOLD_MAX``) and ``M_TRIM_THRESHOLD`` to 64 MiB
(twice that, the ratio glibc's dynamic rule keeps): the values glibc itself would reach after
freeing one 32 MiB block.  Cost: a process keeps up to 64 MiB of freed heap for reuse instead of
returning it at once; blocks of 32 MiB and more are still ``mmap``-ed and returned on ``free``.

Both must be set, in this order: setting either one turns glibc's dynamic adjustment off, and a
trim threshold alone leaves the mmap threshold at its 128 KiB start (measured: 1.79 s on the case
above, worse than doing nothing).  See ``mallopt(3)``.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

__all__ = ["pin_malloc_thresholds", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "ENV"]

#: Environment variable: ``0`` leaves malloc as it is.
ENV = "SPARKML_SCALE_MALLOC_PIN"

#: ``M_MMAP_THRESHOLD`` in bytes: glibc's ``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit.
MMAP_THRESHOLD = 32 << 20
#: ``M_TRIM_THRESHOLD`` in bytes: twice :data:`MMAP_THRESHOLD`, as glibc's dynamic rule sets it.
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3

_pinned: Optional[bool] = None


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # musl has no such name
        return False


def pin_malloc_thresholds() -> bool:
    """Pin this process's glibc malloc thresholds (see the module docstring); once per process.

    Returns True when they are pinned (now or by an earlier call), False where the C library is
    not glibc (macOS, Windows, musl), ``mallopt`` refused, or the process's environment sets
    ``SPARKML_SCALE_MALLOC_PIN=0`` (on executors: ``spark.executorEnv.SPARKML_SCALE_MALLOC_PIN``):
    nothing is changed then.  Never raises.
    """
    global _pinned
    if _pinned is None:
        ok = False
        if os.environ.get(ENV, "1") != "0" and _glibc():
            try:
                mallopt = ctypes.CDLL(None).mallopt
                mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                mallopt.restype = ctypes.c_int
                ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            except (OSError, AttributeError):
                ok = False
        _pinned = ok
    return _pinned
