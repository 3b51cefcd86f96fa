"""Every notebook under notebooks/ runs top to bottom, as a person would run it in Jupyter.

Each notebook executes in its own Jupyter kernel (``nbclient``; this interpreter's ``ipykernel``)
with ``MPLBACKEND=Agg`` (the notebooks turn on ``%matplotlib inline``, which renders figures as
PNG outputs and never opens a window), its working directory a fresh temporary folder, and a time
limit.  A cell that raises fails the test, and every notebook asserts numbers of its own (an AUC,
an explained variance, an accuracy), so a notebook that runs but computes nonsense fails too.

The executed copy is written for a person to look at, under ``build/notebooks/<name>/`` (or
``$SPARKML_SCALE_NOTEBOOK_OUT``): ``<name>.ipynb`` with outputs, ``<name>.html`` and every figure as
``figure-NN.png``.

The committed notebooks carry no outputs (diffs stay readable; outputs come from the run above)
and stay small; a separate check holds that.
"""
import asyncio
import base64
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from helpers import CLUSTER, CONNECT, background

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
OUT = Path(os.environ.get("SPARKML_SCALE_NOTEBOOK_OUT") or ROOT / "build" / "notebooks")
#: Seconds one cell may run, and the whole notebook (measured 20-90 s each on 2 quiet cores).
CELL_TIMEOUT = 400
NOTEBOOK_TIMEOUT = 600
MAX_BYTES = 50_000

pytestmark = pytest.mark.skipif(CONNECT or CLUSTER, reason="each notebook starts its own session; run once, classic")


def _ids(paths):
    return [p.stem for p in paths]


def test_the_notebooks_are_there():
    names = {p.stem for p in NOTEBOOKS}
    for expected in ("01_quickstart_flights", "02_pca_fashion_mnist", "03_torch_on_spark",
                     "04_delta_lineage_streaming"):
        assert expected in names, f"notebooks/{expected}.ipynb is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs_and_small(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes (limit {MAX_BYTES})"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, c in enumerate(code):
        assert not c.get("outputs") and c.get("execution_count") is None, \
            f"{path.name}: code cell {i} was committed with outputs (clear them: the test run renders them)"
    source = "\n".join(c.source for c in code)
    assert re.search(r"^\s*assert\b", source, re.M), f"{path.name} asserts no number"
    assert "%matplotlib inline" in source, f"{path.name}: figures need %matplotlib inline"
    # No paths of one developer's machine; data comes from the package's loaders or temp folders.
    for pattern in (r"/work/", r"/home/", r"/Users/", r"/tmp/", r"C:\\\\"):
        assert not re.search(pattern, source), f"{path.name} names a machine path ({pattern})"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def _write_rendered(nb, name: str) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("figure-*.png"):
        old.unlink()
    nbformat.write(nb, out / f"{name}.ipynb")
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out / f"{name}.html").write_text(html, encoding="utf-8")
    n = 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png:
                n += 1
                (out / f"figure-{n:02d}.png").write_bytes(base64.b64decode(png))
    return out


def _execute(path: Path):
    """Run one notebook in its own kernel and working folder: ``(executed notebook, seconds, error)``,
    ``error`` a message when it did not finish within NOTEBOOK_TIMEOUT (a failing cell shows as an
    error output of the notebook)."""
    import tempfile

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env.update({
        "MPLBACKEND": "Agg",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    })
    for k in ("SPARKML_SCALE_TEST_CONNECT", "SPARKML_SCALE_TEST_CLUSTER", "SPARK_REMOTE"):
        env.pop(k, None)
    work = tempfile.mkdtemp(prefix=f"sparkml_scale_nb_{path.stem}_")
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": work}})
    started = time.perf_counter()
    error = None
    try:
        asyncio.run(asyncio.wait_for(client.async_execute(env=env), NOTEBOOK_TIMEOUT))
    except asyncio.TimeoutError:
        error = f"{path.name} did not finish within {NOTEBOOK_TIMEOUT} s"
    except CellExecutionError:
        pass  # the cell's error output is in nb, checked by the test
    return nb, time.perf_counter() - started, error


def start_in_background(items):
    """The notebooks run in kernels of their own: start them with the suite (conftest), one at a time
    on the background thread, so they overlap the rest of the tests."""
    if CONNECT or CLUSTER:
        return
    for item in items:
        path = item.callspec.params.get("path") if hasattr(item, "callspec") else None
        if item.originalname == "test_notebook_runs" and path is not None:
            background(f"notebook:{path.stem}", lambda p=path: _execute(p))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path):
    nb, seconds, error = background(f"notebook:{path.stem}", lambda: _execute(path)).result()
    nb.metadata.setdefault("sparkml_scale", {})["seconds"] = round(seconds, 1)
    out = _write_rendered(nb, path.stem)
    print(f"{path.name}: {seconds:.1f} s (on the background thread), rendered under {out}")
    if error:
        pytest.fail(error)
    figures = list(out.glob("figure-*.png"))
    assert figures, f"{path.name} drew no figure"
    # A figure that is one flat colour is a plot of nothing (an empty axis, NaNs).
    assert all(f.stat().st_size > 5_000 for f in figures), [f.name for f in figures if f.stat().st_size <= 5_000]
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, json.dumps(errors[0])[:2000]
