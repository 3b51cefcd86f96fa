"""The package's own JVM function: dense vectors to Python as bytes, not as ``list<double>``.

Every fit reads its feature vectors through Arrow.  With ``vector_to_array`` (a
``list<double>``) Spark's Arrow writer copies each value one by one (a null check, a
bounds check and a validity bit per element), which is most of the JVM-to-Python transfer:
1,000,000 x 256 doubles take 2.6-2.8 s on 2 cores.  ``sparkml_scale_vector_to_bytes`` (the
Java class ``sparkmlscale.VectorToBytes`` in ``sparkml-scale-udf.jar``, 1.3 KB, built from
``jvm/src`` by ``scripts/build_udf_jar.sh``) turns each vector into the little-endian bytes of
its dense values, so the writer copies one binary value per row: 1.4-1.5 s for the same rows,
and Python reads a batch as one zero-copy ``(rows, d)`` float64 array
(:func:`sparkml_scale.core.arrow.bytes_to_dense`).  The values are the same doubles, bit for
bit.

:func:`vector_bytes_function` registers the function in a session the first time a fit
needs it (a temporary function, ``spark.udf.registerJavaFunction``, which works on classic
Spark and Spark Connect).  The jar must be on the session's class path:

- sessions started by :func:`sparkml_scale.core.session.get_session` get it in ``spark.jars``;
- the Docker image has it among Spark's own jars; any other ``spark-submit`` needs
  ``--jars`` with :data:`JAR` (``sparkml-scale jars`` lists only the optional jars);
- a Spark Connect session gets it as a session artifact (``spark.addArtifacts``) when the
  server does not have it.

Anywhere else (a classic session started without the jar, a server that refuses artifacts)
the fit reads ``vector_to_array`` as before: same results, slower transfer.  Setting
``spark.sparkml_scale.vectorBytes`` to ``false`` in a session does the same (A/B checks).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
import zipfile
from typing import Optional

__all__ = ["JAR", "JAVA_CLASS", "FUNCTION", "ENABLE_CONF", "vector_bytes_function", "source_digest", "jar_digest"]

log = logging.getLogger(__name__)

#: The jar with :data:`JAVA_CLASS`, shipped inside the package.
JAR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sparkml-scale-udf.jar")
JAVA_CLASS = "sparkmlscale.VectorToBytes"
#: The SQL name the function is registered under (a temporary function of the session).
FUNCTION = "sparkml_scale_vector_to_bytes"
#: Runtime setting: ``false`` makes fits read ``vector_to_array`` (the function is not used).
ENABLE_CONF = "spark.sparkml_scale.vectorBytes"
_MANIFEST_KEY = "Sparkml-Scale-Source-SHA256"

#: Per session: whether the function is registered there (a failed registration is not retried).
_REGISTERED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def vector_bytes_function(spark) -> Optional[str]:
    """The SQL name of the vector-to-bytes function in ``spark``, registering it on first use,
    or ``None`` when it is turned off (:data:`ENABLE_CONF`) or cannot be loaded there (then
    the caller reads ``vector_to_array``).  Never raises."""
    try:
        if str(spark.conf.get(ENABLE_CONF, "true")).strip().lower() == "false":
            return None
    except Exception:  # noqa: BLE001 - a setting that cannot be read means the default
        pass
    with _LOCK:
        try:
            ok = _REGISTERED.get(spark)
        except TypeError:  # not weak-referenceable: check every time
            ok = None
        if ok is None:
            ok = _register(spark)
            try:
                _REGISTERED[spark] = ok
            except TypeError:
                pass
    return FUNCTION if ok else None


def _register(spark) -> bool:
    from pyspark.sql.types import BinaryType

    from .session import is_connect

    def attempt() -> Optional[Exception]:
        try:
            spark.udf.registerJavaFunction(FUNCTION, JAVA_CLASS, BinaryType())
            return None
        except Exception as exc:  # noqa: BLE001 - class not on the class path, Java UDFs refused, ...
            return exc

    err = attempt()
    if err is not None and is_connect(spark) and os.path.isfile(JAR):
        try:
            spark.addArtifacts(JAR)
            err = attempt()
        except Exception as exc:  # noqa: BLE001 - the server refuses artifacts
            err = exc
    if err is not None:
        log.info("sparkml_scale: %s is not available in this session (%s); vectors are read with "
                 "vector_to_array (slower transfer, same results). Add %s to spark.jars to use it.",
                 JAVA_CLASS, str(err).splitlines()[0][:200], JAR)
        return False
    return True


def source_digest(src_dir: Optional[str] = None) -> str:
    """SHA-256 over the Java sources under ``jvm/src`` of a source checkout (relative paths
    and contents, in sorted order): what ``scripts/build_udf_jar.sh`` writes into the jar."""
    if src_dir is None:
        src_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "jvm", "src")
    h = hashlib.sha256()
    paths = []
    for root, _, files in os.walk(src_dir):
        paths += [os.path.join(root, f) for f in files if f.endswith(".java")]
    if not paths:
        raise FileNotFoundError(f"no Java sources under {src_dir}")
    for p in sorted(paths, key=lambda p: os.path.relpath(p, src_dir).replace(os.sep, "/")):
        h.update(os.path.relpath(p, src_dir).replace(os.sep, "/").encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()


def jar_digest(jar: str = JAR) -> Optional[str]:
    """The source digest recorded in ``jar``'s manifest (``None`` if absent)."""
    with zipfile.ZipFile(jar) as z:
        text = z.read("META-INF/MANIFEST.MF").decode()
    text = text.replace("\r\n", "\n").replace("\n ", "")  # manifest lines wrap at 72 bytes
    for line in text.splitlines():
        if line.startswith(_MANIFEST_KEY + ":"):
            return line.split(":", 1)[1].strip()
    return None
