"""What a search shows while it runs: a line per finished trial, a live table, MLflow runs.

- Each finished trial is logged (logger ``sparkml_scale.tuning``, INFO) as one line: number,
  state, value, best so far, seconds, params.  When progress bars are on (Jupyter, a terminal,
  see :mod:`sparkml_scale.core.progress`) the line also goes to stderr under a tqdm bar over the
  trials; in a Jupyter kernel the trials table is displayed and updated as it grows.
- With MLflow installed and a run active in the thread that called ``fit``, each trial becomes
  a nested run (its params, the metric, state and seconds) and the parent run gets the best
  params and value.  Logging never fails the search: an MLflow error is logged as a warning.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import Any, Dict, Optional

log = logging.getLogger("sparkml_scale.tuning")

__all__ = ["TrialReporter", "trial_line"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v)


def trial_line(row: Dict[str, Any], best: Optional[float], best_number: Optional[int]) -> str:
    """``trial 3 COMPLETE value=0.9123 best=0.9150 (trial 1) 2.3 s {regParam=0.01, ...}``."""
    value = row.get("value")
    shown = f"value={value:.6g}" if isinstance(value, float) and math.isfinite(value) else (
        f"at step {row['steps']}" if row["state"] == "PRUNED" else row.get("error") or "")
    best_text = f"best={best:.6g} (trial {best_number})" if best is not None else "best=none yet"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
    return f"trial {row['number']} {row['state']} {shown} {best_text} {row['seconds']:.1f} s {{{params}}}"


def _mlflow_run():
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        try:
            import mlflow  # noqa: F811
        except ImportError:
            return None
    try:
        return mlflow if mlflow.active_run() is not None else None
    except Exception:  # noqa: BLE001
        return None


class TrialReporter:
    """Shows a search's progress (see the module docstring)."""

    def __init__(self, total: int, maximize: bool, metric: str, show: bool):
        self.total, self.maximize, self.metric, self.show = total, maximize, metric or "metric", show
        self.rows = []
        self._bar = None
        self._handle = None
        self._mlflow = _mlflow_run()
        if show:
            from ..core.progress import _in_kernel, _tqdm

            try:
                self._bar = _tqdm()(total=total, unit="trial", desc="HyperparameterSearch trials", file=sys.stderr,
                                    leave=True, dynamic_ncols=True)
            except Exception:  # noqa: BLE001
                self._bar = None
            self._kernel = _in_kernel()

    def finished(self, row: Dict[str, Any], study) -> None:
        self.rows.append(row)
        best, best_number = None, None
        try:
            bt = study.best_trial
            best, best_number = float(bt.value), bt.number
        except ValueError:  # no complete trial yet
            pass
        line = trial_line(row, best, best_number)
        log.info(line)
        if self._bar is not None:
            try:
                self._bar.write(line, file=sys.stderr)
                self._bar.set_postfix({"best": f"{best:.6g}" if best is not None else "-"}, refresh=False)
                self._bar.update(1)
            except Exception:  # noqa: BLE001
                pass
        if self.show and getattr(self, "_kernel", False):
            self._table()
        if self._mlflow is not None:
            self._log_trial(row)

    def _table(self) -> None:
        try:
            import pandas as pd
            from IPython.display import display

            df = pd.DataFrame(sorted(self.rows, key=lambda r: r["number"]))[
                ["number", "state", "value", "seconds", "params", "error"]]
            if self._handle is None:
                self._handle = display(df, display_id=True)
            else:
                self._handle.update(df)
        except Exception:  # noqa: BLE001 - no IPython: the lines are enough
            pass

    def _log_trial(self, row: Dict[str, Any]) -> None:
        mlflow = self._mlflow
        try:
            parent = mlflow.active_run()
            # in the parent's experiment: without experiment_id MLflow puts a nested run in the active
            # experiment (its "Default" when the parent was started with an explicit experiment_id)
            with mlflow.start_run(run_name=f"trial {row['number']}", nested=True,
                                  experiment_id=parent.info.experiment_id if parent is not None else None):
                mlflow.log_params({k: v for k, v in row["params"].items()})
                if row["state"] == "COMPLETE":
                    mlflow.log_metric(self.metric, float(row["value"]))
                mlflow.set_tags({"trial.number": row["number"], "trial.state": row["state"],
                                 "trial.seconds": round(row["seconds"], 3),
                                 **({"trial.error": row["error"][:4000]} if row.get("error") else {})})
        except Exception as exc:  # noqa: BLE001 - tracking must not fail the search
            log.warning("MLflow logging of trial %s failed: %s", row["number"], exc)
            self._mlflow = None

    def log_best(self, model) -> None:
        if self._mlflow is None:
            return
        try:
            self._mlflow.log_params({f"best.{k}": v for k, v in model.bestParams.items()})
            self._mlflow.log_metric(f"best_{self.metric}", model.bestValue)
            self._mlflow.set_tag("best.trial", model.bestTrial["number"])
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow logging of the best trial failed: %s", exc)

    def close(self) -> None:
        if self._bar is not None:
            try:
                self._bar.close()
            except Exception:  # noqa: BLE001
                pass
            self._bar = None
