"""Launching :func:`sparkml_scale.torch.worker.run_rank` on Spark: TorchDistributor and Horovod.

Both backends move the data the same way: one barrier ``mapInArrow`` stage over the
DataFrame repartitioned to ``numProc`` partitions; each barrier task writes its
partition's Arrow record batches to an Arrow IPC stream file on the executor's local
disk (no Parquet, no petastorm) and starts one training process that reads it
(:class:`sparkml_scale.torch.data.RankShard`).  Rank 0's result (weights as
``torch.save`` bytes and the metrics) is the stage's only output row(s).

- ``"torch_distributor"``: pyspark's ``TorchDistributor(local_mode=False)`` and its
  DataFrame entry point (``_train_on_dataframe``, the barrier stage above, written by
  pyspark), which starts ``torchrun`` in every task; the ranks use DDP (Gloo on CPU,
  NCCL on GPU).  One process on CPU (``numProc=1``, no GPU wanted) skips TorchDistributor:
  its barrier task trains in its own Python worker (:func:`_launch_single`) -- a world of one
  has no process group to set up, and torchrun's launch (a fresh interpreter importing
  torch, the agent, TorchDistributor's fixed one-second wait for its log server) cost more
  than a small fit's training; same data path, weights and errors, and its barrier result
  stage is not retried either.
- ``"horovod"``: our barrier task starts Horovod's own Gloo rendezvous server
  (``horovod.runner.http.http_server.RendezvousServer``, as ``horovod.spark.run`` and
  ``horovod.ray`` do) in rank 0, shares its port with ``BarrierTaskContext.allGather``,
  and starts ``python -m sparkml_scale.torch.worker horovod`` with Horovod's slot
  environment; the ranks use ``hvd.DistributedOptimizer`` and broadcast parameters and
  optimizer state from rank 0.  We do not call ``horovod.spark.run`` itself: it
  schedules its tasks through ``SparkContext`` over an RDD range (not possible on
  Spark Connect, and the DataFrame's partitions could only reach those tasks through
  staged files).

Neither needs ``SparkContext``: both run on Spark Connect.
"""
from __future__ import annotations

import collections
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Optional

import pyarrow as pa

from ..core.allreduce import after_barrier
from ..core.cluster import wait_for_slots
from ..core.errors import task_error
from .worker import ERROR_TAG

__all__ = ["horovod_available", "launch", "TrainingError", "check_slots"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_OUT_SCHEMA = pa.schema([("seq", pa.int64()), ("chunk", pa.binary())])


class TrainingError(RuntimeError):
    """Distributed training failed in a training process (the message says where and why)."""


def horovod_available() -> bool:
    """True when ``horovod.torch`` imports here and was built with Gloo."""
    try:
        import horovod.torch as hvd

        return bool(hvd.gloo_built())
    except Exception:  # noqa: BLE001 - not installed, or built without torch
        return False


def check_slots(spark, num_proc: int) -> Optional[int]:
    """Fail fast (``ValueError`` naming 'numProc' and the slots found) when the cluster's task
    slots are fewer than ``num_proc`` or cannot be told: a barrier stage needs every process
    running at once, and Spark refuses a larger one (SPARK-24819; in Spark 4.x that refusal also
    shuts the SparkContext down).  Waits a few seconds for executors still registering (see
    :func:`~sparkml_scale.core.cluster.wait_for_slots`).  Returns the slots."""
    slots = wait_for_slots(spark, num_proc)
    if slots is None:
        raise ValueError(f"param 'numProc' is {num_proc} but the cluster's task slots cannot be told (dynamic "
                         "allocation, or no spark.executor.instances/spark.executor.cores and no reachable driver "
                         "UI): a barrier stage needs one free slot per process; set those confs")
    if num_proc > slots:
        raise ValueError(f"param 'numProc' is {num_proc} but the cluster has {slots} task slot(s) "
                         "(a barrier stage needs one free slot per process); lower numProc or add executors")
    return slots


def _training_error(exc: BaseException) -> Exception:
    """The clean message of a failure in a training process (tagged line), else a summary."""
    text = str(exc)
    msg = _tagged_error(text.splitlines(), first=True)
    if msg is not None:
        return _data_error(msg) or TrainingError(msg)
    err = task_error(exc, "distributed training")
    if isinstance(err, (ValueError, TypeError)):
        return err
    msg = str(err)
    if "TorchDistributor failed" in text:
        msg += (f" (the training processes' own errors are in the executors' stdout logs, on lines starting "
                f"with {ERROR_TAG!r}; Spark does not retry TorchDistributor's barrier stage: backend='horovod' "
                "is retried as a whole)")
    return TrainingError(msg)


def launch(df, spec: Dict[str, Any], num_proc: int, backend: str, use_gpu: bool) -> Dict[str, Any]:
    """Train with ``backend`` ("torch_distributor" or "horovod") on ``num_proc`` processes over
    ``df`` (repartitioned to ``num_proc``); returns rank 0's result dict."""
    df = df.repartition(num_proc)
    try:
        if backend == "torch_distributor" and num_proc == 1 and not use_gpu:
            return _launch_single(df, spec)
        if backend == "torch_distributor":
            return _launch_torch_distributor(df, spec, num_proc, use_gpu)
        if backend == "horovod":
            return _launch_horovod(df, spec, num_proc)
    except (ValueError, TypeError, TrainingError):
        raise
    except Exception as exc:  # noqa: BLE001 - Py4J/Spark/pyspark errors become one clear message
        raise _training_error(exc) from None
    raise ValueError(f"param 'backend' must be 'auto', 'torch_distributor' or 'horovod', got {backend!r}")


# ----------------------------------------------------------------------------- TorchDistributor
def _td_entry(spec_bytes: bytes):
    """Runs in every ``torchrun`` process that TorchDistributor starts."""
    from pyspark import cloudpickle

    from .worker import run_rank

    spec = cloudpickle.loads(spec_bytes)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    try:
        return run_rank(spec, os.environ["SPARK_PARTITION_ARROW_DATA_FILE"], rank, world, local_rank,
                        dist="ddp", stride=(local_rank, local_world))
    except (ValueError, TypeError) as exc:
        # Bad params or data: every rank finds the same problem (data problems are agreed on
        # through one allreduce before training), so every rank returns it and exits cleanly;
        # TorchDistributor passes rank 0's return value to the driver, which raises it.  (A
        # raised exception would reach the driver only as "TorchDistributor failed".)
        print(f"{ERROR_TAG} {type(exc).__name__}: {exc}", flush=True)
        return {"error": "TypeError" if isinstance(exc, TypeError) else "ValueError", "message": str(exc)}
    except Exception as exc:
        print(f"{ERROR_TAG} {type(exc).__name__}: {exc}", flush=True)
        raise


def _launch_torch_distributor(df, spec, num_proc, use_gpu):
    from pyspark import cloudpickle
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=num_proc, local_mode=False, use_gpu=use_gpu)
    if not hasattr(distributor, "_train_on_dataframe"):  # pragma: no cover - pyspark < 3.5
        raise TrainingError("backend 'torch_distributor' needs pyspark >= 3.5 (TorchDistributor on DataFrames)")
    empty = ValueError(_empty_message(spec["featuresCol"], num_proc))
    try:
        out = distributor._train_on_dataframe(_td_entry, df, cloudpickle.dumps(spec))
    except EOFError:
        # No barrier task ran, so no result came back to unpickle: no partition (e.g. df.limit(0)).
        raise empty from None
    except Exception as exc:  # noqa: BLE001
        # TorchDistributor refuses an empty partition ("Empty Spark partition is not allowed",
        # hidden by a KeyError in its cleanup); launch() repartitioned to numProc, so there are
        # fewer rows than processes.
        text = str(exc)
        if "Empty Spark partition" in text or "KeyError: 'SPARK_PARTITION_ARROW_DATA_FILE'" in text:
            raise empty from None
        raise
    if out is None:
        raise TrainingError("TorchDistributor returned no result from rank 0")
    if "error" in out:
        raise (TypeError if out["error"] == "TypeError" else ValueError)(out["message"])
    return out


# ----------------------------------------------------------------------------- one CPU process
def _prewarm() -> None:
    """Import what training needs (torch, and torch._dynamo, which the first optimizer imports: about
    a second each in a fresh process) while the task is still receiving its partition."""
    import importlib

    try:
        for name in ("torch", "torch._dynamo", __package__ + ".worker", __package__ + ".data",
                     __package__ + ".factory", __package__ + ".loop"):
            importlib.import_module(name)
    except Exception:  # noqa: BLE001 - the training itself reports what does not import
        pass


def _single_task(spec_bytes: bytes, features_col: str):
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import threading

        from pyspark import cloudpickle

        warm = threading.Thread(target=_prewarm, daemon=True)
        warm.start()
        root = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or None
        work = tempfile.mkdtemp(prefix="sparkml_scale_td1_", dir=root if root and os.path.isdir(root) else None)
        threads = None
        try:
            data = os.path.join(work, "data.arrow")
            if _write_stream(batches, data) == 0:
                yield _error_batch("ValueError: " + _empty_message(features_col, 1))
                return
            warm.join()
            import torch

            from .worker import run_rank

            threads = torch.get_num_threads()
            try:
                result = run_rank(cloudpickle.loads(spec_bytes), data, 0, 1, 0, dist="ddp")
            except (ValueError, TypeError) as exc:  # bad params or data: a result row, as _td_entry
                print(f"{ERROR_TAG} {type(exc).__name__}: {exc}", flush=True)
                yield _error_batch(f"{'TypeError' if isinstance(exc, TypeError) else 'ValueError'}: {exc}")
                return
            except Exception as exc:
                # what TorchDistributor reports for a failed training process: its output has the cause
                print(f"{ERROR_TAG} {type(exc).__name__}: {exc}", flush=True)
                raise RuntimeError(f"TorchDistributor failed during training (one process, in the task): "
                                   f"{type(exc).__name__}: {exc}") from None
            payload = io.BytesIO()
            torch.save(result, payload)
            payload = payload.getvalue()
            yield _payload_batch(payload)
        finally:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)  # the Python worker is reused by later tasks
            shutil.rmtree(work, ignore_errors=True)

    return task


def _launch_single(df, spec):
    """``backend="torch_distributor"`` with one CPU process: one barrier task (a result stage, not
    retried, as TorchDistributor's) writes its partition to a local Arrow file and trains on it in
    its own Python worker -- no ``torchrun``, no second interpreter, no log-streaming server: a world
    of one has no process group to set up, and the launch cost (a fresh interpreter importing torch
    twice, TorchDistributor's fixed 1 s wait for its log server) was most of a small fit's time.
    The same :func:`~sparkml_scale.torch.worker.run_rank`, seed, data order and result."""
    from pyspark import cloudpickle

    from .worker import load_checkpoint_bytes

    # TorchDistributor hides the GPUs from a CPU run (CUDA_VISIBLE_DEVICES=""): useGpu "auto" means CPU here
    spec = dict(spec, useGpu="false")
    rows = df.mapInArrow(_single_task(cloudpickle.dumps(spec), spec["featuresCol"]), "seq long, chunk binary",
                         barrier=True).collect()
    if not rows:  # no partition: nothing ran
        raise ValueError(_empty_message(spec["featuresCol"], 1))
    errors = [r["chunk"].decode("utf-8") for r in rows if r["seq"] < 0]
    if errors:
        raise _data_error(errors[0]) or TrainingError(errors[0])
    return load_checkpoint_bytes(b"".join(r["chunk"] for r in sorted(rows, key=lambda r: r["seq"])))


# ----------------------------------------------------------------------------- Horovod
def _iface_of(host: str) -> Optional[str]:
    """The network interface that holds ``host``'s IPv4 address (for HOROVOD_GLOO_IFACE)."""
    import psutil

    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return None
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
            return name
    return None


def _slot_plan(hosts: List[str]):
    """Horovod ``SlotInfo`` per barrier rank (rank = Spark partition id), grouping by host."""
    from horovod.runner.common.util.hosts import SlotInfo

    order = list(dict.fromkeys(hosts))
    per_host = collections.Counter(hosts)
    plan = []
    for rank, h in enumerate(hosts):
        local_rank = hosts[:rank].count(h)
        cross_hosts = [x for x in order if per_host[x] > local_rank]
        plan.append(SlotInfo(hostname=h, rank=rank, local_rank=local_rank, cross_rank=cross_hosts.index(h),
                             size=len(hosts), local_size=per_host[h], cross_size=len(cross_hosts)))
    return plan


def _write_stream(batches: Iterator[pa.RecordBatch], path: str) -> int:
    rows = 0
    writer = None
    with open(path, "wb") as f:
        for b in batches:
            if writer is None:
                writer = pa.ipc.new_stream(f, b.schema)
            writer.write_batch(b)
            rows += b.num_rows
        if writer is not None:
            writer.close()
    return rows


def _horovod_task(spec_bytes: bytes, features_col: str):
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        hosts = [i.address.rsplit(":", 1)[0] for i in ctx.getTaskInfos()]
        root = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or None
        work = tempfile.mkdtemp(prefix="sparkml_scale_hvd_", dir=root if root and os.path.isdir(root) else None)
        server = None
        try:
            data = os.path.join(work, "data.arrow")
            rows = _write_stream(batches, data)
            plan = _slot_plan(hosts)
            port = 0
            if rank == 0:
                from horovod.runner.http.http_server import RendezvousServer

                server = RendezvousServer()
                port = server.start()
                server.init(plan)
            counts = ctx.allGather(f"{port}:{rows}")
            if any(int(c.split(":")[1]) == 0 for c in counts):
                # The same on every attempt: reported as a result row, not a task failure (which
                # Spark would answer by running the barrier stage again).
                if rank == 0:
                    yield _error_batch("ValueError: " + _empty_message(features_col, len(counts)))
                return
            port = int(counts[0].split(":")[0])
            from horovod.runner.gloo_run import create_slot_env_vars

            env = dict(os.environ)
            env.update(create_slot_env_vars(plan[rank]))
            env.update({"HOROVOD_GLOO_RENDEZVOUS_ADDR": hosts[0], "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
                        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"})
            iface = _iface_of(hosts[rank])
            if iface:
                env["HOROVOD_GLOO_IFACE"] = iface
            spec_path = os.path.join(work, "spec.pkl")
            with open(spec_path, "wb") as f:
                f.write(spec_bytes)
            out_path = os.path.join(work, "result.pt")
            proc = subprocess.Popen([sys.executable, "-m", "sparkml_scale.torch.worker", "horovod", spec_path,
                                     data, out_path], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            tail: collections.deque = collections.deque(maxlen=60)
            for line in proc.stdout:  # type: ignore[union-attr]
                text = line.decode("utf-8", "replace")
                tail.append(text)
                sys.stdout.write(text)
            code = proc.wait()
            tagged = _tagged_error(tail) if code != 0 else None
            data_error = tagged if _data_error(tagged) else None
            # rank 0 keeps the rendezvous server up until all are done
            infos = [json.loads(i) for i in ctx.allGather(json.dumps([code, data_error, tagged]))]
            failed = [(r, c, e, t) for r, (c, e, t) in enumerate(infos) if c != 0]
            if failed and all(e is not None for _, _, e, _ in failed):
                # bad data or params, found by the ranks before training (the same on every attempt):
                # a result row for the driver to raise, not a failed task that Spark would retry
                if rank == 0:
                    yield _error_batch(failed[0][2])
                return
            if failed:
                # Every failing task names the root cause: the first rank whose error is not
                # Horovod's "shut down" consequence of another rank's failure.
                causes = sorted(failed, key=lambda f: (f[3] is None or "HorovodInternalError" in f[3], f[0]))
                r0, c0, _, t0 = causes[0]
                head = f"{ERROR_TAG} {t0} (Horovod rank {r0})" if t0 else f"Horovod rank {r0} exited with code {c0}"
                raise RuntimeError(head + "\n" + "this rank's last output:\n" + "".join(tail))
            if rank == 0:
                with open(out_path, "rb") as f:
                    payload = f.read()
                yield _payload_batch(payload)
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(work, ignore_errors=True)

    return task


def _tagged_error(lines, first: bool = False) -> Optional[str]:
    """The last (or ``first``) tagged error line of a training process's output
    (``"Kind: message"``, see ``worker.ERROR_TAG``), else ``None``."""
    found = None
    for line in lines:
        if ERROR_TAG in line:
            found = line.split(ERROR_TAG, 1)[1].strip()
            if first:
                break
    return found


def _data_error(tagged: Optional[str]) -> Optional[Exception]:
    """The ``ValueError``/``TypeError`` of a tagged line that reports bad data or params
    (found the same on every attempt), else ``None``."""
    kind, _, message = (tagged or "").partition(": ")
    if kind in ("ValueError", "ShardDataError", "TypeError"):
        return (TypeError if kind == "TypeError" else ValueError)(message)
    return None


def _empty_message(col: str, num_proc: int) -> str:
    return (f"column {col!r} (param 'featuresCol'): the DataFrame is empty or has fewer rows than "
            f"param 'numProc' ({num_proc}); every training process needs rows")


def _payload_batch(payload: bytes) -> pa.RecordBatch:
    """The trained result's bytes as one batch of rows ``(seq, chunk)``, at most ``_CHUNK`` bytes
    per chunk; the driver joins the chunks in ``seq`` order."""
    chunks = [payload[i:i + _CHUNK] for i in range(0, len(payload), _CHUNK)]
    return pa.RecordBatch.from_arrays([pa.array(range(len(chunks)), pa.int64()), pa.array(chunks, pa.binary())],
                                      schema=_OUT_SCHEMA)


def _error_batch(message: str) -> pa.RecordBatch:
    """The result row (``seq`` -1) of a Horovod stage that found bad data or params."""
    return pa.RecordBatch.from_arrays([pa.array([-1], pa.int64()), pa.array([message.encode("utf-8")], pa.binary())],
                                      schema=_OUT_SCHEMA)


def _launch_horovod(df, spec, num_proc):
    from pyspark import cloudpickle

    from .worker import load_checkpoint_bytes

    if not horovod_available():
        raise ValueError("param 'backend' is 'horovod' but horovod.torch (with Gloo) does not import here; "
                         "run scripts/install_horovod.sh or use backend='torch_distributor'")
    # after_barrier: a failed rank fails this attempt, and Spark runs the whole barrier stage again.
    rows = after_barrier(df.mapInArrow(_horovod_task(cloudpickle.dumps(spec), spec["featuresCol"]), "seq long, chunk binary",
                                       barrier=True)).collect()
    if not rows:  # rank 0 returns its result or fails: no row means no task ran (no partition)
        raise ValueError(f"column {spec['featuresCol']!r} (param 'featuresCol'): the DataFrame is empty")
    errors = [r["chunk"].decode("utf-8") for r in rows if r["seq"] < 0]
    if errors:
        raise _data_error(errors[0]) or TrainingError(errors[0])
    payload = b"".join(r["chunk"] for r in sorted(rows, key=lambda r: r["seq"]))
    return load_checkpoint_bytes(payload)
