"""glibc malloc thresholds pinned by the torch processes (``sparkml_scale.torch.malloc``).

The mechanism is checked through the process's resident memory: a 24 MiB block freed by an unpinned
process goes back to the kernel at once (mmap-ed: the threshold starts at 128 KiB), while a pinned
process keeps it for reuse (heap: under the 32 MiB mmap threshold, and under the 64 MiB trim
threshold when freed).  The speed it buys is measured in ``benchmarks/bench_torch.py``.
"""
import functools
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from sparkml_scale.torch import malloc

glibc_only = pytest.mark.skipif(not malloc._glibc(), reason="mallopt thresholds are glibc's")

_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    from sparkml_scale.torch.malloc import pin_malloc_thresholds

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    pinned = pin_malloc_thresholds() if sys.argv[1] == "pin" else False
    again = pin_malloc_thresholds() if sys.argv[1] == "pin" else False
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 24 << 20
    before = rss()
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)  # touch every page
    held = rss()
    libc.free(p)
    after = rss()
    print(json.dumps({"pinned": pinned, "again": again, "grew": held - before, "kept": after - before}))
""")


def _probe(mode, env=None):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **(env or {})), check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_pinned_process_keeps_freed_blocks_for_reuse_and_unpinned_returns_them():
    plain = _probe("plain")
    pinned = _probe("pin")
    assert plain["grew"] >= 20 << 20 and pinned["grew"] >= 20 << 20  # the block was really touched
    assert plain["kept"] < 4 << 20  # unpinned: the freed 24 MiB went back to the kernel
    assert pinned["pinned"] is True and pinned["again"] is True
    assert pinned["kept"] >= 20 << 20  # pinned: kept in the heap for the next batch


@glibc_only
def test_env_opt_out_changes_nothing():
    out = _probe("pin", {malloc.ENV: "0"})
    assert out["pinned"] is False
    assert out["kept"] < 4 << 20


def test_thresholds_are_glibcs_dynamic_maximum_and_twice_it():
    assert malloc.MMAP_THRESHOLD == 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
    assert malloc.TRIM_THRESHOLD == 2 * malloc.MMAP_THRESHOLD


def test_inference_and_calibration_pin_before_the_forward(monkeypatch):
    import torch

    from sparkml_scale.torch.inference import _calibrate_fn, _predict_columns
    from sparkml_scale.torch.models import mlp

    calls = []
    monkeypatch.setattr(malloc, "pin_malloc_thresholds", lambda: calls.append(1) or True)
    factory = functools.partial(mlp, 4, [8], 3)
    buf = io.BytesIO()
    torch.save(factory().state_dict(), buf)
    feats = pa.array([[0.1, 0.2, 0.3, 0.4]] * 5, pa.list_(pa.float32()))
    out = _predict_columns(factory, buf.getvalue(), "k", "softmax", feats, "features", None, 2, "false", 1)
    assert len(calls) == 1 and len(out[0]) == 5
    batch = pa.RecordBatch.from_arrays([feats], names=["features"])
    list(_calibrate_fn(factory(), (4,), "features", None, 2, 1)(iter([batch])))
    assert len(calls) == 2
    assert np.isfinite(np.asarray(out[0])).all()
