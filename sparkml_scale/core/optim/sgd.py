"""Mini-batch AdaGrad with iterative parameter mixing, for linear models trained online.

Per epoch one Spark job: every partition runs AdaGrad (Duchi, Hazan & Singer 2011, "Adaptive
subgradient methods for online learning and stochastic optimization"; L1 by its proximal
step) over shuffled mini-batches of its cached blocks, starting from the current parameters;
the driver averages the partitions' parameters and accumulators weighted by their weight
sums (McDonald, Hall & Mann 2010, "Distributed training strategies for the structured
perceptron").  :class:`SGDState` is the state a model keeps for ``partialFit``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from ..blocks import iter_blocks
from ..mapreduce import tree_aggregate

__all__ = ["SGDState", "sgd_epochs", "ADAGRAD_EPS"]


class SGDState:
    """State of AdaGrad mini-batch training in the optimizer's (scaled, centred) space:
    ``beta (K, d)``, ``b (K,)`` and their squared-gradient accumulators ``G``, ``Gb``; the
    frozen feature scaling ``mu``, ``inv_std`` and penalty weights; counters."""

    ARRAYS = ("beta", "b", "G", "Gb", "mu", "inv_std", "pen1", "pen2", "scalars")

    def __init__(self, beta, b, mu, inv_std, pen1, pen2, l1, l2, fit_b, multinomial, G=None, Gb=None,
                 epochs_done=0, steps=0):
        self.beta, self.b = np.array(beta, dtype=np.float64), np.array(b, dtype=np.float64)
        self.G = np.zeros_like(self.beta) if G is None else np.array(G, dtype=np.float64)
        self.Gb = np.zeros_like(self.b) if Gb is None else np.array(Gb, dtype=np.float64)
        self.mu, self.inv_std = mu, inv_std
        self.pen1, self.pen2 = pen1.reshape(self.beta.shape), pen2.reshape(self.beta.shape)
        self.l1, self.l2 = l1, l2
        self.fit_b, self.multinomial = fit_b, multinomial
        self.epochs_done, self.steps = epochs_done, steps

    @classmethod
    def from_objective(cls, obj) -> "SGDState":
        beta, b = obj.unpack(obj.x0)
        return cls(beta, b, obj.mu, obj.inv_std, obj.pen1, obj.pen2, obj.l1, obj.l2, obj.fit_b, obj.multinomial)

    def params(self):
        """``(coef (K, d), intercept (K,))`` in the original space."""
        coef = self.beta * self.inv_std
        return coef, self.b - coef @ self.mu

    def penalty(self) -> float:
        return float(0.5 * self.l2 * np.sum(self.pen2 * self.beta**2) + self.l1 * np.sum(self.pen1 * np.abs(self.beta)))

    def copy(self) -> "SGDState":
        return SGDState.from_arrays(self.to_arrays())

    def to_arrays(self) -> Dict[str, np.ndarray]:
        scalars = np.array([self.l1, self.l2, float(self.fit_b), float(self.multinomial), self.epochs_done,
                            self.steps], dtype=np.float64)
        vals = dict(beta=self.beta, b=self.b, G=self.G, Gb=self.Gb, mu=self.mu, inv_std=self.inv_std,
                    pen1=self.pen1, pen2=self.pen2, scalars=scalars)
        return {f"sgd_{k}": np.array(v) for k, v in vals.items()}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "SGDState":
        a = {k[4:]: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if k.startswith("sgd_")}
        l1, l2, fit_b, multinomial, epochs_done, steps = a["scalars"].tolist()
        return cls(a["beta"], a["b"], a["mu"], a["inv_std"], a["pen1"], a["pen2"], l1, l2, bool(fit_b),
                   bool(multinomial), a["G"], a["Gb"], int(epochs_done), int(steps))


#: AdaGrad's denominator guard.
ADAGRAD_EPS = 1e-8


def sgd_epochs(blocks_df, st: SGDState, block_sums, epochs: int, batch_size: int, step: float, seed: int,
               depth: int, num_partitions: Optional[int],
               on_epoch: Optional[Callable[[int, float], None]] = None) -> List[float]:
    """Train ``st`` in place by iterative parameter mixing: per epoch one Spark job in which
    every partition runs AdaGrad (Duchi, Hazan & Singer 2011; L1 by its proximal step) over
    shuffled mini-batches of its rows, starting from the current parameters; the driver
    then averages the partitions' parameters and accumulators weighted by their weight
    sums (McDonald, Hall & Mann 2010).  ``block_sums(blocks, coef, b)`` is the loss kernel
    (raw weighted sums, e.g. ``MultinomialLoss().sums``).  Returns per epoch the mean
    mini-batch loss seen during the epoch plus the penalty at its end; ``on_epoch(epoch, loss)``
    is called after each (progress)."""
    history: List[float] = []
    mu, inv_std, pen1, pen2 = st.mu, st.inv_std, st.pen1, st.pen2
    l1, l2, fit_b = st.l1, st.l2, st.fit_b
    mu_s = mu * inv_std
    for _ in range(epochs):
        beta0, b0, G0, Gb0 = st.beta, st.b, st.G, st.Gb
        epoch = st.epochs_done

        def partial(batches):
            from pyspark import TaskContext

            ctx = TaskContext.get()
            rng = np.random.default_rng([seed, epoch, ctx.partitionId() if ctx else 0])
            beta, b, G, Gb = beta0.copy(), b0.copy(), G0.copy(), Gb0.copy()
            wsum = lsum = 0.0
            nsteps = 0
            for X, y, w in iter_blocks(batches):
                order = rng.permutation(X.shape[0])
                for s in range(0, len(order), batch_size):
                    idx = np.sort(order[s : s + batch_size])
                    wb = w[idx]
                    W = float(wb.sum())
                    if W <= 0:
                        continue
                    coef = beta * inv_std
                    loss, gb, g = block_sums([(X[idx], y[idx], wb)], coef, b - coef @ mu)
                    g = (g * inv_std - np.outer(gb, mu_s)) / W + l2 * pen2 * beta
                    G += g * g
                    H = np.sqrt(G) + ADAGRAD_EPS
                    beta = beta - step * g / H
                    if l1 > 0:
                        beta = np.sign(beta) * np.maximum(np.abs(beta) - step * l1 * pen1 / H, 0.0)
                    if fit_b:
                        gb = gb / W
                        Gb += gb * gb
                        b = b - step * gb / (np.sqrt(Gb) + ADAGRAD_EPS)
                    wsum += W
                    lsum += float(loss[0])
                    nsteps += 1
            return [wsum * beta, wsum * b, wsum * G, wsum * Gb, np.array([wsum, lsum, nsteps])]

        arrays, num_partitions = tree_aggregate(blocks_df, partial, depth=depth, num_partitions=num_partitions)
        wsum, lsum, nsteps = arrays[4]
        st.epochs_done += 1
        if wsum <= 0:
            break
        st.beta, st.b, st.G, st.Gb = (a / wsum for a in arrays[:4])
        st.steps += int(nsteps)
        history.append(lsum / wsum + st.penalty())
        if on_epoch is not None:
            on_epoch(st.epochs_done - 1, history[-1])
    return history
