"""The per-rank torch training loop, without Spark."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sparkml_scale.torch.loop import numpy_batches, pick_device, resolve_loss, train_epochs  # noqa: E402


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    return X[order], y[order].astype(np.int64)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def test_mlp_on_digits_learns_and_reports_metrics():
    X, y = _digits()
    Xtr, ytr, Xva, yva = X[:1400], y[:1400], X[1400:], y[1400:]
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seen = []
    hist = train_epochs(model, opt, "cross_entropy", numpy_batches(Xtr, ytr, 64, seed=1), epochs=8,
                        val_batches=lambda: numpy_batches(Xva, yva, 256, seed=0, shuffle=False)(0),
                        on_epoch_end=lambda e, m: seen.append(e) and False)
    assert [h["epoch"] for h in hist] == list(range(8)) and seen == list(range(8))
    assert all(h["samples"] == 1400 for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"] / 3
    assert hist[-1]["val_accuracy"] >= 0.93
    assert hist[-1]["samples_per_s"] > 0


def test_resume_and_early_stop_and_allreduce_hook():
    X, y = _digits()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def allreduce_sum(v):  # a fake second rank with the same sums
        calls.append(v.copy())
        return 2 * v

    hist = train_epochs(model, opt, "cross_entropy", numpy_batches(X, y, 128, seed=0), epochs=10, start_epoch=7,
                        allreduce_sum=allreduce_sum, on_epoch_end=lambda e, m: e == 8)
    assert [h["epoch"] for h in hist] == [7.0, 8.0]  # resumed at 7, stopped after 8
    assert len(calls) == 2 and hist[0]["samples"] == 2 * len(y)
    assert hist[0]["loss"] == pytest.approx(calls[0][0] / calls[0][1])


def test_regression_loss_and_bad_names():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    hist = train_epochs(model, opt, "mse", numpy_batches(X, y, 32, seed=0), epochs=30)
    assert hist[-1]["loss"] < 1e-3
    np.testing.assert_allclose(model.weight.detach().numpy()[0], [1.0, -2.0, 0.5], atol=0.05)
    with pytest.raises(ValueError, match="loss"):
        resolve_loss("hinge")
    with pytest.raises(ValueError, match="useGpu"):
        pick_device("maybe")
    assert pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="batchSize"):
        numpy_batches(X, y, 0, seed=0)


def test_per_rank_code_needs_no_pyspark():
    """The loop, the reference networks and the trust check import and run where only torch is
    installed (a GPU box under torchrun): pyspark is made unimportable in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from sparkml_scale.torch.factory import build_module\n"
        "from sparkml_scale.torch.loop import train_epochs, numpy_batches, pick_device\n"
        "m = build_module({'factory': 'sparkml_scale.torch.models:small_cnn', 'args': [10]})\n"
        "print(type(m).__name__)\n"
        "try:\n"
        "    build_module({'factory': 'os:system', 'args': ['exit 0']})\n"
        "except ValueError as e:\n"
        "    print(type(e).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["SmallCNN", "ModelLoadError"]


def test_shard_batches_do_not_depend_on_the_order_rows_arrived_in():
    # On a cluster a partition's rows can arrive in another order after a lost executor (shuffle
    # blocks fetched local-first): batches, validation split and strides must not change.
    from sparkml_scale.torch.data import RankShard, canonical_order

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, 300).astype(np.float64)
    perm = rng.permutation(300)

    def shard(X, y):
        s = RankShard(X, y, order=canonical_order(X, y))
        mask = np.empty(len(y), dtype=bool)
        mask[s.order] = np.arange(len(y)) % 5 == 0
        return RankShard(X, y, mask, s.order).stride(1, 2)

    a, b = shard(X, y), shard(X[perm], y[perm])
    assert a.num_train == b.num_train == 120 and len(a.val_idx) == 30
    for (xa, ya), (xb, yb) in zip(a.epoch_batches(3, 5, 16, 7, 0), b.epoch_batches(3, 5, 16, 7, 0)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(np.concatenate([v for v, _ in a.val_batches(64)]),
                                  np.concatenate([v for v, _ in b.val_batches(64)]))
    # rows differing only in the label are told apart
    assert len(np.unique(canonical_order(np.zeros((4, 1), np.float32), np.arange(4.0)))) == 4


def test_float_list_columns_convert_once_and_match_the_general_path():
    """list<float>/list<double>/list<int> features: one conversion to float32 (a view for list<float>),
    the same values as the general path; nulls and ragged rows still take it (and its errors)."""
    import pyarrow as pa

    from sparkml_scale.core.arrow import lists_to_dense
    from sparkml_scale.torch.data import ShardDataError, _lists_fast, features_to_float32
    from sparkml_scale.torch.inference import _tensor

    X = np.random.default_rng(0).random((50, 12))
    offsets = pa.array(np.arange(0, 50 * 12 + 1, 12, dtype=np.int32))
    for values in (pa.array(X.ravel(), pa.float32()), pa.array(X.ravel()), pa.array((X * 10).astype(np.int64).ravel())):
        arr = pa.ListArray.from_arrays(offsets, values)
        for a in (arr, arr.slice(7, 20), pa.chunked_array([arr.slice(0, 10), arr.slice(10)])):
            general = lists_to_dense(a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a).astype(np.float32)
            got = features_to_float32(a, "f", [3, 4])
            assert got.dtype == np.float32 and got.shape == (len(general), 3, 4)
            assert np.array_equal(got.reshape(len(general), -1), general)
    view = features_to_float32(pa.ListArray.from_arrays(offsets, pa.array(X.ravel(), pa.float32())), "f")
    assert not view.flags.writeable  # no copy: the Arrow buffer itself
    t = _tensor(view[:5])  # torch gets a writable copy, with the same values
    assert t.dtype == torch.float32 and np.array_equal(t.numpy(), view[:5])
    writable = np.ones((4, 3), np.float32)
    assert _tensor(writable).data_ptr() == writable.ctypes.data  # shared, not copied
    assert _lists_fast(pa.array([[1.0, None], [2.0, 3.0]])) is None  # a null value: the general path
    assert _lists_fast(pa.array([[1.0, 2.0], None])) is None
    with pytest.raises(ShardDataError, match=r"'f'.*different sizes \(2 and 1\)"):
        features_to_float32(pa.array([[1.0, 2.0], [3.0]]), "f")
    with pytest.raises(ShardDataError, match=r"'f'.*12 values.*\[5\]"):
        features_to_float32(pa.ListArray.from_arrays(offsets, pa.array(X.ravel(), pa.float32())), "f", [5])
