"""Download the optional JVM jars listed in jars/manifest.json into jars/ (run on a connected machine).

    python jars/fetch.py                 # jars for the installed pyspark's Spark version
    python jars/fetch.py --spark 4.1     # for another Spark version (e.g. the cluster's)
    python jars/fetch.py --repo https://my.mirror/maven2

Each jar is checked against the repository's .sha1 file.  Copy the jars/ directory to the
air-gapped machine (or point SPARKML_SCALE_JARS at it); no --packages needed there.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.request
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


def maven_url(coordinate: str, repo: str = MAVEN_CENTRAL) -> str:
    """``group:artifact:version`` -> the jar's URL in a Maven 2 layout repository."""
    parts = coordinate.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"Maven coordinate must be group:artifact:version, got {coordinate!r}")
    group, artifact, version = parts
    return f"{repo.rstrip('/')}/{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"


def coordinates(spark_version: str, manifest_path: str = os.path.join(HERE, "manifest.json")) -> List[str]:
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    minor = ".".join(spark_version.split(".")[:2])
    delta = manifest["delta"]
    if minor not in delta:
        raise SystemExit(f"no Delta jars listed for Spark {minor} in {manifest_path} (listed: {sorted(delta)}); "
                         f"see its notes: {manifest.get('notes', {})}")
    return list(delta[minor])


def fetch(coordinate: str, repo: str, dest: str) -> str:
    url = maven_url(coordinate, repo)
    target = os.path.join(dest, url.rsplit("/", 1)[1])
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    with urllib.request.urlopen(url + ".sha1", timeout=60) as r:
        want = r.read().decode().split()[0].strip()
    got = hashlib.sha1(data).hexdigest()
    if got != want:
        raise SystemExit(f"checksum mismatch for {url}: {got} != {want}")
    tmp = target + ".part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spark", help="Spark version (default: the installed pyspark's)")
    p.add_argument("--repo", default=MAVEN_CENTRAL, help="Maven repository URL (default: Maven Central)")
    p.add_argument("--dest", default=HERE, help="directory for the jars (default: jars/)")
    args = p.parse_args(argv)
    version = args.spark
    if not version:
        import pyspark

        version = pyspark.__version__
    for c in coordinates(version):
        print(fetch(c, args.repo, args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
