"""What every training process runs: build the model, join the collective, train its share.

:func:`run_rank` is launched by both backends -- inside ``torchrun`` processes started by
pyspark's ``TorchDistributor`` (``dist="ddp"``) and inside the processes the Horovod launcher
starts from its barrier tasks (``dist="horovod"``, ``python -m sparkml_scale.torch.worker``).
It needs no Spark: only the spec (a dict), the path of the rank's Arrow data and the
environment the launcher set.  ``dist="none"`` trains alone (one process, no collective).

Errors found on one rank (bad labels, empty share) are agreed on through one allreduce before
training, so every rank stops together with the same message instead of waiting for a peer.
Messages the driver should show as they are carry the prefix :data:`ERROR_TAG`.

With ``spec["epochCallback"]`` (a flag: the callable itself stays on the driver) rank 0 asks the
driver after each epoch whether to stop (:func:`~sparkml_scale.core.progress.ask` on the progress
channel, waiting up to :data:`CALLBACK_TIMEOUT_S`), and the ranks agree on the answer through one
``allreduce_sum``.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..core.faults import maybe_fail
from ..core.progress import ask, report

__all__ = ["run_rank", "ERROR_TAG", "load_checkpoint_bytes", "CHECKPOINT_PREFIX", "CALLBACK_TIMEOUT_S"]

ERROR_TAG = "[sparkml_scale error]"
CHECKPOINT_PREFIX = "checkpoint-epoch"
#: Seconds rank 0 waits for the driver's epochCallback answer before it trains on without it.
CALLBACK_TIMEOUT_S = 120.0


def _log(rank: int, msg: str) -> None:
    print(f"[sparkml_scale rank {rank}] {msg}", flush=True)


def load_checkpoint_bytes(data: bytes) -> Dict[str, Any]:
    """A checkpoint (or saved weights) from ``torch.save`` bytes, loaded with ``weights_only=True``.
    (torch 2.13 rebuilds quantized tensors through TypedStorage and warns about that deprecation on
    every load; that one warning is silenced here.)"""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _check_labels(y: np.ndarray, loss, num_outputs: int, label_col: str) -> Optional[str]:
    if loss == "cross_entropy" and len(y):
        bad = (y != np.floor(y)) | (y < 0) | (y >= num_outputs)
        if bad.any():
            return (f"column {label_col!r} (param 'labelCol') holds {y[bad][0]!r}; loss 'cross_entropy' needs "
                    f"class indices 0..{num_outputs - 1} (the model has {num_outputs} outputs)")
    if loss == "bce_with_logits" and len(y) and ((y < 0) | (y > 1)).any():
        return (f"column {label_col!r} (param 'labelCol') holds {y[(y < 0) | (y > 1)][0]!r}; loss "
                "'bce_with_logits' needs labels in [0, 1]")
    return None


def run_rank(spec: Dict[str, Any], data_path: str, rank: int, world: int, local_rank: int = 0,
             dist: str = "none", stride: tuple = (0, 1)) -> Optional[Dict[str, Any]]:
    """Train on this rank's data; rank 0 returns the result, the others ``None``.

    ``spec`` keys: model, optimizer, loss, learningRate, batchSize (global), epochs, seed,
    featuresCol, labelCol, validationCol, validationFraction, inputShape, earlyStoppingPatience,
    checkpointDir, resume (checkpoint bytes or None), frozenLayers, useGpu, threads; optional:
    progress (the driver's channel address), epochCallback (bool: ask the driver after each epoch
    whether to stop, see the module docstring), masks (``{parameter name: bool array}``: those
    entries stay zero, see :func:`_mask_keeper`).
    ``model``, ``optimizer`` and ``loss`` are callables or names: ``TorchEstimator`` resolves
    references on the driver, where it vets them; a reference left in the spec is resolved here
    only if :meth:`sparkml_scale.torch.factory.Trust.default` trusts it.
    ``stride=(i, k)``: keep every k-th row starting at i (k processes sharing one partition).

    Result: ``{"state": torch.save bytes of the state_dict, "history": [...], "num_outputs": int,
    "stopped_early": bool, "stopped_by_callback": bool, "best_epoch": int or None}``.
    """
    import torch

    from .data import RankShard, ShardDataError, rank_batch_sizes, steps_per_epoch
    from .factory import build_module, freeze, make_optimizer
    from .loop import pick_device, train_epochs
    from .malloc import pin_malloc_thresholds

    pin_malloc_thresholds()  # activations and gradients reuse freed heap (see .malloc)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    seed = int(spec["seed"])
    torch.manual_seed(seed)
    device = pick_device(spec["useGpu"], local_rank)
    error: Optional[str] = None
    shard = None
    try:
        shard = RankShard.from_arrow_file(
            data_path, spec["featuresCol"], spec["labelCol"], input_shape=spec.get("inputShape"),
            validation_col=spec.get("validationCol"), validation_fraction=float(spec.get("validationFraction") or 0),
            seed=seed, rank=rank, column_names=spec.get("columnNames"))
        if stride[1] > 1:
            shard = shard.stride(stride[0], stride[1])
    except ShardDataError as exc:
        error = str(exc)
    model = build_module(spec["model"])
    if spec.get("frozenLayers"):
        freeze(model, spec["frozenLayers"])
    model.to(device)
    optimizer = make_optimizer(spec.get("optimizer"), model.parameters(), float(spec["learningRate"]))
    start_epoch, previous, resume_state = 0, [], None
    if spec.get("resume"):
        resume_state = load_checkpoint_bytes(spec["resume"])
        model.load_state_dict(resume_state["model"])
        start_epoch = int(resume_state["epoch"]) + 1
        previous = list(resume_state.get("history", []))

    train_model: Any = model
    allreduce_sum: Callable[[np.ndarray], np.ndarray] = lambda v: v  # noqa: E731
    cleanup: Callable[[bool], None] = lambda agreed: None  # noqa: E731
    if dist == "ddp" and world > 1:
        import torch.distributed as tdist
        from torch.nn.parallel import DistributedDataParallel

        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

        def allreduce_sum(v):  # noqa: F811
            t = torch.from_numpy(np.array(v, dtype=np.float64)).to(device)
            tdist.all_reduce(t)
            return t.cpu().numpy()

        def cleanup(agreed: bool):  # noqa: F811
            # Every pending collective finishes, and Gloo's worker threads get the GIL to free
            # their finished work objects (which may hold Python-owned tensors), before the
            # process group and DDP's reducer are torn down.  Without this, freeing the reducer
            # joins a Gloo thread that waits for the GIL the freeing thread holds: a deadlock at
            # exit (seen on torch 2.13; a barrier alone was not enough, the threads finish
            # asynchronously).  Also after a data error that all ranks agreed on; not after an
            # unexpected error on one rank (its peers may sit in another collective).
            if agreed:
                try:
                    tdist.barrier()
                except Exception:  # noqa: BLE001 - a peer already failed: nothing left to wait for
                    pass
                time.sleep(0.25)
            tdist.destroy_process_group()
    elif dist == "horovod":
        import horovod.torch as hvd

        hvd.init()
        # Horovod's recipe: wrap, then broadcast rank 0's parameters and optimizer state.  The
        # wrapper is a new optimizer with an empty state, so a resumed state is loaded after
        # wrapping.  A fresh (empty) state is the same on every rank by construction and is not
        # broadcast: Horovod 0.28 would first take a zero-gradient step to create it, which
        # advances Adam's step count (bias correction) and makes the run differ from DDP's.
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        if resume_state is not None:
            optimizer.load_state_dict(resume_state.pop("optimizer"))
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)

        def allreduce_sum(v):  # noqa: F811
            return hvd.allreduce(torch.from_numpy(np.array(v, dtype=np.float64)), op=hvd.Sum, name="metrics").numpy()

        cleanup = lambda agreed: hvd.shutdown()  # noqa: E731

    if resume_state is not None and "optimizer" in resume_state:
        optimizer.load_state_dict(resume_state["optimizer"])
    try:
        num_outputs = 0
        if error is None and shard is not None and len(shard.y):
            model.eval()
            with torch.no_grad():
                out = model(torch.from_numpy(np.array(shard.X[:1])).to(device))
            num_outputs = int(out.shape[1]) if out.dim() == 2 else 1
            error = _check_labels(shard.y, spec["loss"], num_outputs, spec["labelCol"])
        n_train = shard.num_train if shard is not None and error is None else 0
        n_val = len(shard.val_idx) if shard is not None and error is None else 0
        # Every rank may become the one that writes checkpoints (rank 0 of a re-run can land on any
        # executor), so every rank checks that it can write checkpointDir before training starts.
        ckpt_error = probe_checkpoint_dir(spec.get("checkpointDir"), f"training process rank {rank}",
                                          "torch.checkpoint_dir")
        bad = np.zeros(world)
        bad[rank] = float(ckpt_error is not None)
        totals = allreduce_sum(np.concatenate([[float(error is not None), n_train, n_val, num_outputs], bad]))
        if totals[4:].any():
            ranks = ", ".join(str(int(r)) for r in np.flatnonzero(totals[4:]))
            raise ShardDataError(ckpt_error or f"param 'checkpointDir' {spec.get('checkpointDir')!r} cannot be "
                                               f"written by training process rank {ranks} (see its log); it must "
                                               "be a path every executor and the driver can write (shared storage)")
        if totals[0] > 0:
            raise ShardDataError(error or "another training process rejected its data (see its log)")
        if n_train == 0:
            raise ShardDataError("a training process got no training rows; use fewer processes (param "
                                 "'numProc'), a smaller validation share, or more data")
        batch = int(spec["batchSize"])
        local_batch = rank_batch_sizes(batch, world)[rank]
        steps = steps_per_epoch(int(totals[1]), batch)
        have_val = totals[2] > 0
        if int(spec.get("earlyStoppingPatience") or 0) > 0 and not have_val:
            raise ShardDataError("param 'earlyStoppingPatience' needs validation rows: set validationFraction "
                                 "or validationCol (no validation rows were found)")
        if rank == 0:
            _log(rank, f"{int(totals[1])} training rows, {int(totals[2])} validation rows, {world} process(es), "
                       f"{steps} steps/epoch of {batch} rows, device {device}, epochs {start_epoch}..{spec['epochs'] - 1}")

        patience = int(spec.get("earlyStoppingPatience") or 0)
        track = {"best": float("inf"), "wait": 0, "best_epoch": None, "best_state": None}
        if resume_state is not None and "early_stopping" in resume_state:
            es = resume_state["early_stopping"]
            track.update(best=float(es["best"]), wait=int(es["wait"]),
                         best_epoch=None if es["best_epoch"] < 0 else int(es["best_epoch"]))
            if "best_model" in resume_state:
                track["best_state"] = resume_state["best_model"]
        done: List[Dict[str, float]] = []
        ckpt_dir = spec.get("checkpointDir")
        # epochCallback: rank 0 asks the driver until it gets no answer once (then it only reports)
        callback = {"asking": bool(spec.get("epochCallback")) and bool(spec.get("progress")), "stopped": False}

        def on_epoch_end(epoch: int, metrics: Dict[str, float]) -> bool:
            done.append(metrics)
            stop = False
            if patience > 0:
                if metrics["val_loss"] < track["best"]:
                    track.update(best=metrics["val_loss"], wait=0, best_epoch=epoch)
                    if rank == 0:
                        track["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    track["wait"] += 1
                    stop = track["wait"] >= patience
            callback_stop = 0.0
            if rank == 0:
                _log(rank, "epoch " + json.dumps({k: round(v, 6) for k, v in metrics.items()}))
                shown = {k: metrics[k] for k in ("loss", "val_loss", "val_accuracy") if k in metrics}
                if callback["asking"]:
                    answer = ask(spec["progress"], CALLBACK_TIMEOUT_S, record=metrics, **shown)
                    if answer is None:
                        callback["asking"] = False
                        _log(rank, f"warning: no answer from the driver's epochCallback after epoch {epoch} "
                                   f"(unreachable, or it took over {CALLBACK_TIMEOUT_S:.0f} s): training "
                                   "continues without it; the driver calls it after the fit for the epochs "
                                   "it missed")
                    else:
                        callback_stop = float(bool(answer.get("stop")))
                else:
                    report(spec.get("progress"), **shown)
                if ckpt_dir:
                    _checkpoint(ckpt_dir, epoch, model, optimizer, previous + done, track)
                maybe_fail("torch.epoch_end")
            if spec.get("epochCallback"):
                # every rank takes part (the same collectives on every rank), also after rank 0 gave up asking
                if world > 1:
                    callback_stop = float(allreduce_sum(np.array([callback_stop]))[0])
                if callback_stop > 0:
                    callback["stopped"] = True
                    if rank == 0:
                        _log(rank, f"epochCallback stops training after epoch {epoch}")
            return stop or callback["stopped"]

        val = (lambda: shard.val_batches(max(local_batch, 256))) if have_val else None
        train_epochs(
            train_model, optimizer, spec["loss"],
            lambda epoch: shard.epoch_batches(epoch, steps, local_batch, seed, rank),
            int(spec["epochs"]), val_batches=val, device=device, amp=bool(spec.get("amp")),
            start_epoch=start_epoch, allreduce_sum=allreduce_sum if world > 1 else None,
            on_epoch_end=on_epoch_end, after_step=_mask_keeper(model, spec.get("masks"), device),
        )
        if rank != 0:
            return None
        stopped = patience > 0 and track["wait"] >= patience
        state = track["best_state"] if (patience > 0 and track["best_state"] is not None) else model.state_dict()
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
        return {"state": buf.getvalue(), "history": previous + done, "num_outputs": int(num_outputs),
                "stopped_early": bool(stopped), "stopped_by_callback": callback["stopped"],
                "best_epoch": track["best_epoch"]}
    finally:
        try:
            exc = sys.exc_info()[1]
            cleanup(exc is None or isinstance(exc, ShardDataError))
        finally:
            if shard is not None:
                shard.close()


def _mask_keeper(model, masks: Optional[Dict[str, np.ndarray]], device) -> Optional[Callable[[], None]]:
    """``after_step()`` that multiplies each masked parameter by its mask (pruned weights stay zero
    through fine-tuning: their gradients may move them, every step puts them back), after applying
    the masks once; ``None`` without masks.  ``ValueError`` when a mask names no parameter of the
    model or has another shape."""
    if not masks:
        return None
    import torch

    params = dict(model.named_parameters())
    kept = []
    for name, mask in masks.items():
        if name not in params or tuple(params[name].shape) != tuple(np.shape(mask)):
            raise ValueError(f"initialModel's pruning mask for {name!r} does not fit the model built by param 'model'")
        kept.append((params[name], torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)))

    def keep() -> None:
        with torch.no_grad():
            for p, m in kept:
                p.mul_(m)

    keep()
    return keep


def probe_checkpoint_dir(directory: Optional[str], who: str, fault_point: Optional[str] = None) -> Optional[str]:
    """``None`` when this process can create ``directory`` and write a file in it, else the
    error message naming the param, ``who`` (e.g. "training process rank 1") and the host.
    ``fault_point``: a :func:`~sparkml_scale.core.faults.maybe_fail` point checked first."""
    if not directory:
        return None
    import socket

    probe = os.path.join(directory, f".write-probe-{os.getpid()}")
    try:
        if fault_point:
            maybe_fail(fault_point)
        os.makedirs(directory, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
        return None
    except Exception as exc:  # noqa: BLE001 - OSError, or an injected fault in tests
        return (f"param 'checkpointDir' {directory!r} cannot be written by {who} on host {socket.gethostname()}: "
                f"{exc}; it must be a path every executor and the driver can write (shared storage)")


def _checkpoint(directory: str, epoch: int, model, optimizer, history, track) -> None:
    """``directory/checkpoint-epochNNNN.pt`` (torch.save of plain tensors/numbers), written to a
    temporary name and renamed, so a reader never sees half a file."""
    import torch

    os.makedirs(directory, exist_ok=True)
    state = {
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "history": history,
        "early_stopping": {"best": track["best"], "wait": track["wait"],
                           "best_epoch": -1 if track["best_epoch"] is None else track["best_epoch"]},
    }
    if track["best_state"] is not None:
        state["best_model"] = track["best_state"]
    final = os.path.join(directory, f"{CHECKPOINT_PREFIX}{epoch:04d}.pt")
    tmp = final + f".tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, final)


def _main(argv: List[str]) -> int:
    """``python -m sparkml_scale.torch.worker horovod SPEC DATA OUT``: one Horovod rank (env set by
    the launcher).  Writes rank 0's result to OUT with torch.save."""
    from pyspark import cloudpickle
    import torch

    kind, spec_path, data_path, out_path = argv
    with open(spec_path, "rb") as f:
        spec = cloudpickle.load(f)
    rank = int(os.environ.get("HOROVOD_RANK", "0"))
    world = int(os.environ.get("HOROVOD_SIZE", "1"))
    local_rank = int(os.environ.get("HOROVOD_LOCAL_RANK", "0"))
    t0 = time.perf_counter()
    try:
        result = run_rank(spec, data_path, rank, world, local_rank, dist=kind)
    except Exception as exc:  # noqa: BLE001 - reported to the launcher through the exit code and tag
        print(f"{ERROR_TAG} {type(exc).__name__}: {exc}", flush=True)
        raise
    if result is not None:
        result["seconds"] = time.perf_counter() - t0
        tmp = out_path + ".tmp"
        torch.save(result, tmp)
        os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
