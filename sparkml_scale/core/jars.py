"""Optional JVM jars (Delta Lake's Spark side) from ``jars/`` or ``SPARKML_SCALE_JARS``.

On air-gapped clusters ``spark.jars.packages`` cannot download anything; jars fetched
elsewhere (``jars/fetch.py``, coordinates in ``jars/manifest.json``) are added to new
sessions by :func:`sparkml_scale.core.session.get_session` through :func:`jar_conf`, and
to ``spark-submit`` command lines through :func:`submit_args` (``sparkml-scale jars``).
"""
from __future__ import annotations

import glob
import logging
import os
import re
from typing import Dict, List, Optional

__all__ = ["JARS_ENV", "DELTA_EXTENSION", "DELTA_CATALOG", "search_locations", "find_jars", "merged_jars",
           "jar_conf", "submit_args"]

log = logging.getLogger(__name__)

#: Directories and/or ``.jar`` files, separated by ``os.pathsep``; replaces the project's ``jars/``.
JARS_ENV = "SPARKML_SCALE_JARS"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
_DELTA_SPARK = re.compile(r"^delta-spark_(?:(\d+\.\d+)_)?2\.1[23]-[^/]*\.jar$")


def project_jars_dir() -> str:
    """``jars/`` next to the package in a source checkout or editable install."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "jars")


def search_locations() -> List[str]:
    """Where :func:`find_jars` looks: the entries of ``$SPARKML_SCALE_JARS`` if set, else ``jars/``."""
    spec = os.environ.get(JARS_ENV)
    return [e for e in spec.split(os.pathsep) if e] if spec else [project_jars_dir()]


def find_jars(spark_version: Optional[str] = None) -> List[str]:
    """Absolute paths of the jars to add, in a stable order.

    Sources: ``$SPARKML_SCALE_JARS`` if set (a missing entry is a ValueError naming it),
    else ``jars/`` of the project.  A ``delta-spark_X.Y_2.13-*.jar`` built for another
    Spark minor version than ``spark_version`` (default: the installed pyspark's) is
    skipped with a warning: it would fail inside the JVM.
    """
    spec = os.environ.get(JARS_ENV)
    entries = search_locations()
    found: List[str] = []
    for e in entries:
        if os.path.isdir(e):
            found += sorted(glob.glob(os.path.join(e, "*.jar")))
        elif e.endswith(".jar") and os.path.isfile(e):
            found.append(e)
        elif spec:
            raise ValueError(f"{JARS_ENV} names {e!r}, which is neither a directory nor a .jar file")
    if spark_version is None:
        import pyspark

        spark_version = pyspark.__version__
    minor = ".".join(spark_version.split(".")[:2])
    out = []
    for j in dict.fromkeys(os.path.abspath(p) for p in found):
        m = _DELTA_SPARK.match(os.path.basename(j))
        if m and m.group(1) and m.group(1) != minor:
            log.warning("skipping %s: built for Spark %s, this is Spark %s", j, m.group(1), spark_version)
            continue
        out.append(j)
    return out


def merged_jars(spark_jars: str, jars: List[str]) -> str:
    """A ``spark.jars`` value: the comma-separated ``spark_jars`` followed by ``jars``."""
    return ",".join([j for j in (spark_jars or "").split(",") if j] + list(jars))


def jar_conf(spark_version: Optional[str] = None, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Spark settings adding the found jars (merged with ``base``'s ``spark.jars``/extensions)."""
    base = dict(base or {})
    jars = find_jars(spark_version)
    if not jars:
        return {}
    conf = {"spark.jars": merged_jars(base.get("spark.jars", ""), jars)}
    if any(_DELTA_SPARK.match(os.path.basename(j)) for j in jars):
        ext = [e for e in base.get("spark.sql.extensions", "").split(",") if e]
        if DELTA_EXTENSION not in ext:
            ext.append(DELTA_EXTENSION)
        conf["spark.sql.extensions"] = ",".join(ext)
        conf.setdefault("spark.sql.catalog.spark_catalog", base.get("spark.sql.catalog.spark_catalog", DELTA_CATALOG))
    return conf


def submit_args(spark_version: Optional[str] = None) -> List[str]:
    """``spark-submit`` arguments for the found jars: ``--jars a,b --conf k=v ...`` (empty if none)."""
    conf = jar_conf(spark_version)
    if not conf:
        return []
    out = ["--jars", conf.pop("spark.jars")]
    for k, v in conf.items():
        out += ["--conf", f"{k}={v}"]
    return out
