"""Plots of a :class:`~sparkml_scale.monitoring.DriftReport`: reference vs current bin proportions.

Only ``matplotlib.figure.Figure`` is used (never ``pyplot``): no figure is registered with pyplot's
global state, no GUI backend is touched, and a saved PNG is rendered by the Agg canvas, so plotting
works in a job, a notebook or a thread alike.  ``matplotlib`` is needed only here.
"""
from __future__ import annotations

import math
from typing import List, Optional

__all__ = ["plot_histograms", "top_features"]

#: Colours of the two samples (matplotlib's default cycle's first two: blue, orange).
REFERENCE_COLOR = "#1f77b4"
CURRENT_COLOR = "#ff7f0e"
#: At most this many subplots side by side.
MAX_COLUMNS = 3


def _last_window(table):
    """The rows of the report's last window (all rows of an unwindowed report)."""
    if "window" in table and len(table):
        return table[table["window"] == table["window"].max()]
    return table


def top_features(report, top: int = 6) -> List[str]:
    """The ``top`` features to plot, in plot order: the drifted ones first, by PSI (largest first),
    then the others by PSI; ties keep report order.  Windowed reports: ranked on their last window
    (the window :meth:`DriftReport.histogram` shows by default).  ``ValueError`` for ``top < 1``.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    table = _last_window(report.toPandas()).reset_index(drop=True)
    if not len(table):
        return []
    psi = table["psi"].astype(float).fillna(-math.inf)
    order = sorted(range(len(table)), key=lambda i: (not bool(table["drifted"].iat[i]), -psi.iat[i], i))
    return list(dict.fromkeys(table["feature"].iat[i] for i in order))[:top]


def _short(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label[: width - 1] + "\u2026"


def plot_histograms(report, top: int = 6, path: Optional[str] = None):
    """Reference vs current proportions per bin of the ``top`` features of ``report``, one subplot each.

    Parameters
    ----------
    report : DriftReport
        Uses ``report.toPandas()`` (``feature``, ``psi``, ``drifted``, ``flaggedBy``) to choose and
        title the subplots and ``report.histogram(feature)`` (``bin``, ``reference``, ``current``
        counts) for the bars; bins empty in both samples are left out (e.g. a ``missing`` bin of a
        column without nulls).
    top : int
        How many features: the drifted ones first by PSI, then the others by PSI (:func:`top_features`).
    path : str, optional
        Save the figure there as PNG (Agg canvas, 100 dpi).

    Returns
    -------
    matplotlib.figure.Figure
        Not registered with ``pyplot``: display it in Jupyter as the cell's value, or save it.  A report
        without features gives a figure with a note.

    Raises
    ------
    ValueError
        ``top < 1``.
    ImportError
        Without matplotlib, naming the package to install.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("DriftReport.plot needs matplotlib: pip install matplotlib") from None
    import numpy as np

    features = top_features(report, top)
    table = _last_window(report.toPandas()).drop_duplicates("feature").set_index("feature")
    n = len(features)
    ncols = max(1, min(MAX_COLUMNS, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    if n == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no features in the report", ha="center", va="center")
    for k, feature in enumerate(features):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        h = report.histogram(feature)
        ref = h["reference"].to_numpy(dtype=np.float64)
        cur = h["current"].to_numpy(dtype=np.float64)
        keep = (ref > 0) | (cur > 0)
        if not keep.any():
            keep[:] = True
        labels = [_short(str(b)) for b, k_ in zip(h["bin"], keep) if k_]
        ref_p = ref[keep] / ref.sum() if ref.sum() > 0 else np.zeros(int(keep.sum()))
        cur_p = cur[keep] / cur.sum() if cur.sum() > 0 else np.zeros(int(keep.sum()))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ref_p, width=0.4, color=REFERENCE_COLOR, label="reference")
        ax.bar(x + 0.2, cur_p, width=0.4, color=CURRENT_COLOR, label="current")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                           fontsize=7)
        ax.set_ylabel("proportion", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        row = table.loc[feature]
        psi = float(row["psi"])
        status = f"drifted ({row['flaggedBy']})" if bool(row["drifted"]) else "no drift"
        ax.set_title(f"{feature}\nPSI {psi:.3g}, {status}", fontsize=9,
                     color="#b22222" if bool(row["drifted"]) else "black")
        if k == 0:
            ax.legend(fontsize=7)
    if path is not None:
        fig.savefig(path, format="png", dpi=100)
    return fig
