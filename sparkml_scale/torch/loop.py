"""The per-rank training loop: a plain function, usable without Spark.

``TorchEstimator``'s backends (TorchDistributor/DDP, Horovod) call
:func:`train_epochs` on every rank with the rank's data; it can equally run
alone (``world=1``) or under ``torchrun`` on a GPU machine.  Distribution is
injected, not hard-wired: pass a DDP-wrapped ``model`` or a Horovod
``DistributedOptimizer`` for gradient averaging, and ``allreduce_sum`` to
sum the epoch metrics over ranks.

Data: ``batches(epoch)`` returns an iterable of ``(x, y)`` numpy arrays (one
mini-batch each, already shuffled for that epoch); they become torch tensors
on ``device`` here (``torch.from_numpy``, no copy on CPU).
"""
from __future__ import annotations

import inspect
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

__all__ = ["train_epochs", "resolve_loss", "pick_device", "numpy_batches"]

LOSSES = ("cross_entropy", "mse", "bce_with_logits")


def resolve_loss(loss):
    """A loss callable from a name ("cross_entropy", "mse", "bce_with_logits") or a callable."""
    import torch.nn.functional as F

    if callable(loss):
        return loss
    table = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss, "bce_with_logits": F.binary_cross_entropy_with_logits}
    if loss not in table:
        raise ValueError(f"param 'loss' must be a callable or one of {', '.join(LOSSES)}, got {loss!r}")
    return table[loss]


def pick_device(use_gpu: str = "auto", local_rank: int = 0):
    """``torch.device``: CUDA (``cuda:local_rank`` modulo the visible devices) when
    ``use_gpu`` is "auto"/"true" and CUDA is available, else CPU.  ``use_gpu="true"``
    without CUDA raises ``RuntimeError``."""
    import torch

    use_gpu = str(use_gpu).lower()
    if use_gpu not in ("auto", "true", "false"):
        raise ValueError(f"param 'useGpu' must be 'auto', 'true' or 'false', got {use_gpu!r}")
    if use_gpu != "false" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if use_gpu == "true":
        raise RuntimeError("useGpu='true' but CUDA is not available on this worker")
    return torch.device("cpu")


def numpy_batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int, shuffle: bool = True):
    """``batches(epoch)`` over in-memory arrays: a fresh permutation per epoch (seeded by
    ``(seed, epoch)``), mini-batches of ``batch_size`` rows (the last one smaller)."""
    if batch_size < 1:
        raise ValueError(f"param 'batchSize' must be >= 1, got {batch_size}")

    def batches(epoch: int):
        order = np.random.default_rng([seed, epoch]).permutation(len(X)) if shuffle else np.arange(len(X))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            yield X[idx], y[idx]

    return batches


def _to_tensor(a: np.ndarray, device, dtype=None):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device, non_blocking=True)


def _label_dtype(loss_fn):
    import torch
    import torch.nn.functional as F

    return torch.long if loss_fn is F.cross_entropy else torch.float32


def train_epochs(
    model,
    optimizer,
    loss,
    batches: Callable[[int], Iterable[Tuple[np.ndarray, np.ndarray]]],
    epochs: int,
    *,
    val_batches: Optional[Callable[[], Iterable[Tuple[np.ndarray, np.ndarray]]]] = None,
    device=None,
    amp: bool = False,
    start_epoch: int = 0,
    allreduce_sum: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], bool]] = None,
    after_step: Optional[Callable[[], None]] = None,
) -> List[Dict[str, float]]:
    """Train ``model`` for epochs ``start_epoch .. epochs - 1``; returns one metrics dict per epoch.

    Parameters
    ----------
    model : torch.nn.Module (possibly DDP-wrapped), already on ``device``.
    optimizer : torch.optim.Optimizer over its parameters (possibly Horovod-wrapped).
    loss : a callable ``loss(output, target)`` or a name (see :func:`resolve_loss`).
        With "cross_entropy" the labels become int64 class indices, else float32.
    batches : ``batches(epoch)`` -> iterable of ``(x, y)`` numpy mini-batches (float32 ``x``).
    val_batches : ``val_batches()`` -> iterable of ``(x, y)`` for validation loss/accuracy.
    device : torch.device (default CPU).  ``amp``: autocast to float16 on CUDA (bfloat16 on CPU)
        with a gradient scaler on CUDA.
    allreduce_sum : sums a float64 vector of metric sums over ranks (``None``: one rank); every
        rank calls it once per epoch.
    on_epoch_end : called with ``(epoch, metrics)`` on every rank; returning True stops training
        (e.g. early stopping; must return the same on every rank).
    after_step : called after every optimizer step (e.g. to keep pruned weights at zero).

    Metrics per epoch: ``epoch``, ``loss`` (mean training loss per sample), ``samples``
    (over all ranks), ``samples_per_s``, ``seconds``, and with validation ``val_loss`` and
    ``val_accuracy`` (argmax for multi-column outputs, ``> 0`` logits for one column).
    """
    import torch

    device = device or torch.device("cpu")
    loss_fn = resolve_loss(loss)
    ydtype = _label_dtype(loss_fn)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if (amp and cuda) else None
    autocast_dtype = torch.float16 if cuda else torch.bfloat16
    history: List[Dict[str, float]] = []
    zero_kw = "set_to_none" in inspect.signature(optimizer.zero_grad).parameters
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum = 0.0
        n = 0
        for xb, yb in batches(epoch):
            x = _to_tensor(xb, device, torch.float32)
            y = _to_tensor(yb, device, ydtype)
            if zero_kw:
                optimizer.zero_grad(set_to_none=True)
            else:  # Horovod's DistributedOptimizer.zero_grad takes no arguments
                optimizer.zero_grad()
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=amp):
                out = model(x)
                if ydtype is torch.float32 and out.dim() == 2 and out.shape[1] == 1 and y.dim() == 1:
                    out = out[:, 0]
                batch_loss = loss_fn(out, y)
            if scaler is not None:
                scaler.scale(batch_loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                batch_loss.backward()
                optimizer.step()
            if after_step is not None:
                after_step()
            loss_sum += float(batch_loss.detach()) * len(xb)
            n += len(xb)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        sums = np.array([loss_sum, n, seconds], dtype=np.float64)
        if val_batches is not None:
            sums = np.concatenate([sums, _evaluate(model, loss_fn, ydtype, val_batches(), device)])
        world_sums = sums if allreduce_sum is None else np.asarray(allreduce_sum(sums), dtype=np.float64)
        metrics = {
            "epoch": float(epoch),
            "loss": float(world_sums[0] / max(world_sums[1], 1e-12)),
            "samples": float(world_sums[1]),
            "seconds": float(seconds),
        }
        metrics["samples_per_s"] = metrics["samples"] / max(seconds, 1e-12)
        if val_batches is not None:
            metrics["val_loss"] = float(world_sums[3] / max(world_sums[5], 1e-12))
            metrics["val_accuracy"] = float(world_sums[4] / max(world_sums[5], 1e-12))
        history.append(metrics)
        if on_epoch_end is not None and on_epoch_end(epoch, metrics):
            break
    return history


def _evaluate(model, loss_fn, ydtype, batches, device) -> np.ndarray:
    """``[loss sum, correct, count]`` over ``batches`` (no gradients)."""
    import torch

    model.eval()
    loss_sum = correct = count = 0.0
    with torch.no_grad():
        for xb, yb in batches:
            x = _to_tensor(xb, device, torch.float32)
            y = _to_tensor(yb, device, ydtype)
            out = model(x)
            if out.dim() == 2 and out.shape[1] == 1 and y.dim() == 1:
                out = out[:, 0]
            loss_sum += float(loss_fn(out, y, reduction="sum") if _takes_reduction(loss_fn) else
                              loss_fn(out, y) * len(xb))
            if out.dim() == 2:
                correct += float((out.argmax(dim=1) == y.long()).sum())
            elif ydtype is torch.float32:
                correct += float(((out > 0).float() == y).sum())
            count += len(xb)
    return np.array([loss_sum, correct, count], dtype=np.float64)


def _takes_reduction(fn) -> bool:
    import torch.nn.functional as F

    return fn in (F.cross_entropy, F.mse_loss, F.binary_cross_entropy_with_logits)
