"""TorchEstimator training and TorchModel inference vs their anchors, same machine, same run.

    .venv/bin/python benchmarks/bench_torch.py [--rows 20000] [--epochs 3] [--batch-size 64]
        [--backends torch_distributor,horovod] [--infer-rows 20000] [--json out.json]

Data: Fashion-MNIST (Debian package ``dataset-fashion-mnist``), the first ``--rows``
images of a fixed permutation, pixels / 255 as float32, one ``array<float>`` column
read from Parquet and cached.  Model: :class:`sparkml_scale.torch.models.SmallCNN`
(width 16, 10 classes), Adam, lr 1e-3, seed 0, input ``[1, 28, 28]``.

Training throughput (samples per second):

- anchor: a bare single-process torch loop in this (driver) process on the same
  numpy arrays -- per epoch a permutation, then ``zero_grad / forward /
  cross_entropy / backward / step`` per mini-batch of ``--batch-size`` rows; torch's
  default threads (all cores).
- ours: ``TorchEstimator(numProc=1)`` and ``(numProc=2)`` for each backend, same
  model, batch size and epochs.  Reported two ways: *steady* = the mean of the
  per-epoch ``samples_per_s`` in ``model.history`` after the first epoch (what the
  training processes sustain, as the anchor's is measured), and *end-to-end* =
  rows x epochs / the wall time of ``fit`` (includes launching the Spark stage,
  writing the partitions to local Arrow files, starting torch in the processes).
  Ratio = ours / bare (> 1 means faster).

Inference throughput (rows per second), ``--infer-rows`` rows, materialized with the
``noop`` writer: ``TorchModel.transform`` (one ``mapInArrow`` pass, module built once
per Python worker, default ``inferenceBatchSize``) vs a row-at-a-time Python UDF
(``pyspark.sql.functions.udf``: one row in, one forward pass of a 1-row tensor, one
double out, module cached per worker too, one torch thread per task as ours).  Both on the
same cached DataFrame, for the trained CNN (compute-bound: a conv net on CPU costs about the
same per image batched or not) and for an MLP 784-128-10 (random weights; per-row overhead
dominates), and for narrow rows: scikit-learn's digits (64 pixels) tiled to ``--narrow-rows``
rows with an MLP 64-64-10 (random weights).  Spark 4.3 moves a plain Python UDF's rows in
Arrow batches by default (``spark.sql.execution.pythonUDF.arrow.enabled=true``; the function
is still called once per row); ``--row-udf-arrow false`` times the pickled-row path of
earlier Spark versions instead.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def bare_loop(X, y, epochs, batch_size, lr, seed):
    """The anchor: plain torch, one process.  Returns per-epoch samples/s."""
    import torch
    import torch.nn.functional as F

    from sparkml_scale.torch.models import small_cnn

    torch.manual_seed(seed)
    model = small_cnn(10, 1, 16)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    rates = []
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(X)))
        t0 = time.perf_counter()
        for s in range(0, len(X), batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        rates.append(len(X) / (time.perf_counter() - t0))
    return rates


def _state_bytes(sd) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _row_predictor(factory, state, shape):
    """The anchor UDF: one row in, a 1-row forward pass, one double out; module cached per worker."""
    cache = {}

    def one_row(pixels):
        import torch

        if "m" not in cache:
            torch.set_num_threads(1)
            m = factory()
            m.load_state_dict(state)
            cache["m"] = m.eval()
        with torch.no_grad():
            x = torch.tensor(pixels, dtype=torch.float32).reshape(shape)
            return float(cache["m"](x).argmax(1).item())

    return one_row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backends", default="torch_distributor,horovod")
    ap.add_argument("--infer-rows", type=int, default=20000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--narrow-rows", type=int, default=200000)
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--row-udf-arrow", choices=["true", "false"], default="true",
                    help="the anchor UDF's transport: Spark 4's default Arrow batches (true) or pickled rows")
    ap.add_argument("--skip-train", action="store_true", help="inference only (a 1-epoch numProc=1 CNN fit first)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from benchmarks.harness import materialize
    from sparkml_scale.core.session import get_session
    from sparkml_scale.datasets import load_fashion_mnist
    from sparkml_scale.torch import TorchEstimator
    from sparkml_scale.torch.launch import horovod_available
    from sparkml_scale.torch.models import small_cnn

    X, y = load_fashion_mnist(None, labels=True)
    order = np.random.default_rng(0).permutation(len(y))[: max(args.rows, args.infer_rows)]
    X = (X[order] / 255.0).astype(np.float32)
    y = y[order]
    tmp = tempfile.mkdtemp(prefix="bench_torch_")
    flat = pa.array(X.ravel(), pa.float32())
    pixels = pa.ListArray.from_arrays(pa.array(np.arange(0, len(X) * 784 + 1, 784, dtype=np.int32)), flat)
    pq.write_table(pa.table({"pixels": pixels, "label": pa.array(y)}), os.path.join(tmp, "d.parquet"),
                   row_group_size=2500)

    spark = get_session("bench_torch", master=args.master)
    full = spark.read.parquet(os.path.join(tmp, "d.parquet"))
    train = full.limit(args.rows).repartition(2).cache()
    train.count()
    results = {"rows": args.rows, "epochs": args.epochs, "batch_size": args.batch_size, "train": {}, "infer": {}}

    Xtr, ytr = X[: args.rows].reshape(-1, 1, 28, 28), y[: args.rows]
    bare = bare_loop(Xtr, ytr, 1 if args.skip_train else args.epochs, args.batch_size, 1e-3, 0)
    bare_steady = float(np.mean(bare[1:] if len(bare) > 1 else bare))
    results["train"]["bare"] = {"samples_per_s": bare, "steady": bare_steady}
    print(f"bare loop (1 process, {torch.get_num_threads()} threads): {bare_steady:,.0f} samples/s "
          f"(epochs: {', '.join(f'{r:,.0f}' for r in bare)})", flush=True)

    model = None
    if args.skip_train:
        model = TorchEstimator(model=functools.partial(small_cnn, 10, 1, 16), featuresCol="pixels",
                               inputShape=[1, 28, 28], backend=args.backends.split(",")[0], numProc=1, epochs=1,
                               batchSize=args.batch_size, seed=0).fit(train)
    for backend in ([] if args.skip_train else args.backends.split(",")):
        if backend == "horovod" and not horovod_available():
            print("horovod: not installed, skipped")
            continue
        for n in (1, 2):
            est = TorchEstimator(model=functools.partial(small_cnn, 10, 1, 16), featuresCol="pixels",
                                 inputShape=[1, 28, 28], backend=backend, numProc=n, epochs=args.epochs,
                                 batchSize=args.batch_size, learningRate=1e-3, seed=0)
            t0 = time.perf_counter()
            model = est.fit(train)
            wall = time.perf_counter() - t0
            rates = [h["samples_per_s"] for h in model.history]
            steady = float(np.mean(rates[1:] if len(rates) > 1 else rates))
            e2e = args.rows * args.epochs / wall
            results["train"][f"{backend}/{n}"] = {"samples_per_s": rates, "steady": steady, "fit_s": wall,
                                                  "end_to_end": e2e}
            print(f"{backend:<18} numProc={n}: steady {steady:,.0f} samples/s = {steady / bare_steady:.2f}x bare; "
                  f"fit {wall:.1f} s, end-to-end {e2e:,.0f} samples/s = {e2e / bare_steady:.2f}x bare", flush=True)

    # ---- inference: the trained CNN (compute-bound) and an MLP 784-128-10 (per-row overhead-bound)
    if model is not None and not args.skip_infer:
        from sparkml_scale.torch import TorchModel
        from sparkml_scale.torch.models import mlp

        infer = full.limit(args.infer_rows).repartition(2).cache()
        infer.count()
        torch.manual_seed(0)
        mlp_model = TorchModel._create(_state_bytes(mlp(784, [128], 10).state_dict()), [], 10, "none", False, None)
        mlp_model._set(model=functools.partial(mlp, 784, [128], 10), featuresCol="pixels")
        # narrow rows: scikit-learn's digits (64 pixels) tiled to --narrow-rows rows, MLP 64-64-10
        from sklearn.datasets import load_digits

        D = load_digits().data.astype(np.float32) / 16.0
        D = np.tile(D, (args.narrow_rows // len(D) + 1, 1))[: args.narrow_rows]
        dflat = pa.array(D.ravel(), pa.float32())
        dpix = pa.ListArray.from_arrays(pa.array(np.arange(0, len(D) * 64 + 1, 64, dtype=np.int32)), dflat)
        pq.write_table(pa.table({"pixels": dpix}), os.path.join(tmp, "digits.parquet"), row_group_size=50000)
        narrow = spark.read.parquet(os.path.join(tmp, "digits.parquet")).repartition(2).cache()
        narrow.count()
        torch.manual_seed(0)
        mlp64 = TorchModel._create(_state_bytes(mlp(64, [64], 10).state_dict()), [], 10, "none", False, None)
        mlp64._set(model=functools.partial(mlp, 64, [64], 10), featuresCol="pixels")
        cases = [("cnn", model, functools.partial(small_cnn, 10, 1, 16), (1, 1, 28, 28), infer, args.infer_rows),
                 ("mlp784", mlp_model, functools.partial(mlp, 784, [128], 10), (1, 784), infer, args.infer_rows),
                 ("mlp64", mlp64, functools.partial(mlp, 64, [64], 10), (1, 64), narrow, args.narrow_rows)]
        for case, tm, factory, shape, data, nrows in cases:
            row_udf = F.udf(_row_predictor(factory, tm.state_dict(), shape), T.DoubleType(),
                            useArrow=args.row_udf_arrow == "true")
            res = {}
            for name, fn in (("TorchModel.transform", lambda: materialize(tm.transform(data))),
                             ("row-at-a-time UDF", lambda: materialize(data.withColumn("prediction", row_udf("pixels"))))):
                fn()  # warm-up: Python workers, module cache
                t0 = time.perf_counter()
                fn()
                secs = time.perf_counter() - t0
                res[name] = {"seconds": secs, "rows_per_s": nrows / secs}
                print(f"{case} {name:<22}: {secs:.2f} s, {nrows / secs:,.0f} rows/s", flush=True)
            ratio = res["TorchModel.transform"]["rows_per_s"] / res["row-at-a-time UDF"]["rows_per_s"]
            res["ratio"] = ratio
            results["infer"][case] = res
            print(f"{case} inference: {ratio:.1f}x the row-at-a-time UDF", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
