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
per Python worker, ``inferenceBatchSize`` 1024) vs a row-at-a-time Python UDF
(``pyspark.sql.functions.udf``: one row in, one forward pass of a 1-row tensor, one
double out, module cached per worker too).  Both on the same cached DataFrame.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backends", default="torch_distributor,horovod")
    ap.add_argument("--infer-rows", type=int, default=20000)
    ap.add_argument("--master", default="local[2]")
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
    bare = bare_loop(Xtr, ytr, args.epochs, args.batch_size, 1e-3, 0)
    bare_steady = float(np.mean(bare[1:] if len(bare) > 1 else bare))
    results["train"]["bare"] = {"samples_per_s": bare, "steady": bare_steady}
    print(f"bare loop (1 process, {torch.get_num_threads()} threads): {bare_steady:,.0f} samples/s "
          f"(epochs: {', '.join(f'{r:,.0f}' for r in bare)})", flush=True)

    model = None
    for backend in args.backends.split(","):
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

    # ---- inference
    if model is not None:
        infer = full.limit(args.infer_rows).repartition(2).cache()
        infer.count()
        state = model.state_dict()
        cache = {}

        def one_row(pixels):
            if "m" not in cache:
                m = small_cnn(10, 1, 16)
                m.load_state_dict(state)
                cache["m"] = m.eval()
            with torch.no_grad():
                x = torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, 28, 28)
                return float(cache["m"](x).argmax(1).item())

        row_udf = F.udf(one_row, T.DoubleType())
        for name, fn in (("TorchModel.transform", lambda: materialize(model.transform(infer))),
                         ("row-at-a-time UDF", lambda: materialize(infer.withColumn("prediction", row_udf("pixels"))))):
            fn()  # warm-up: Python workers, module cache
            t0 = time.perf_counter()
            fn()
            secs = time.perf_counter() - t0
            results["infer"][name] = {"seconds": secs, "rows_per_s": args.infer_rows / secs}
            print(f"{name:<22}: {secs:.2f} s, {args.infer_rows / secs:,.0f} rows/s", flush=True)
        r = results["infer"]
        print(f"inference ratio: {r['TorchModel.transform']['rows_per_s'] / r['row-at-a-time UDF']['rows_per_s']:.1f}x "
              "the row-at-a-time UDF")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
