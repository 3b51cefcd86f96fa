"""A real Spark standalone cluster for the tests, started from the installed pyspark (no download).

One master and two workers, each a separate JVM started with ``$SPARK_HOME/bin/spark-class``
(pip's pyspark has no ``sbin/start-master.sh``).  The workers listen on distinct loopback
addresses (127.0.0.2 and 127.0.0.3 where the OS allows binding them, else 127.0.0.1), so code
that assumes "localhost" or the driver's address breaks here as it would on two hosts.  Every
executor is a separate JVM with its own Python workers, as on a real cluster.

Used by ``tests/conftest.py`` (``SPARKML_SCALE_TEST_CLUSTER=1``) and runnable by hand::

    python tests/cluster.py        # starts a cluster, prints its URL, waits for Ctrl-C

Processes are stopped by their own pids (never by name); work dirs and logs live in one
temporary folder that :meth:`StandaloneCluster.stop` removes (kept when ``keep_logs``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional


def spark_home() -> str:
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_hosts(n: int) -> List[str]:
    """``127.0.0.2``, ``127.0.0.3``, ... when this OS lets a process bind them (Linux does), else 127.0.0.1."""
    hosts = []
    for i in range(n):
        host = f"127.0.0.{i + 2}"
        try:
            with socket.socket() as s:
                s.bind((host, 0))
        except OSError:
            host = "127.0.0.1"
        hosts.append(host)
    return hosts


class StandaloneCluster:
    """Master + ``workers`` workers (``cores`` cores, ``memory`` each) on this machine."""

    def __init__(self, workers: int = 2, cores: int = 1, memory: str = "3g", keep_logs: bool = False):
        self.num_workers = workers
        self.cores = cores
        self.memory = memory
        self.keep_logs = keep_logs
        self.root = tempfile.mkdtemp(prefix="sparkml_scale-cluster-")
        self.master_host = "127.0.0.1"
        self.master_port = free_port()
        self.master_ui_port = free_port()
        self.worker_hosts = loopback_hosts(workers)
        self.procs: Dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"spark://{self.master_host}:{self.master_port}"

    @property
    def ui(self) -> str:
        return f"http://{self.master_host}:{self.master_ui_port}"

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SPARK_HOME": spark_home(),
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_DAEMON_MEMORY": "512m",
            "SPARK_NO_DAEMONIZE": "1",
            # The executors' Python workers import the package from this checkout.
            "PYTHONPATH": os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      env.get("PYTHONPATH", "")] if p),
        })
        env.pop("SPARK_REMOTE", None)
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        return env

    def _spawn(self, name: str, args: List[str]) -> subprocess.Popen:
        log = open(os.path.join(self.root, f"{name}.log"), "wb")
        cmd = [os.path.join(spark_home(), "bin", "spark-class")] + args
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.root,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, timeout: float = 120.0) -> "StandaloneCluster":
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", self.master_host,
                               "--port", str(self.master_port), "--webui-port", str(self.master_ui_port)])
        for i, host in enumerate(self.worker_hosts):
            work = os.path.join(self.root, f"worker{i}")
            os.makedirs(work)
            self._spawn(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--host", host,
                                       "--cores", str(self.cores), "--memory", self.memory,
                                       "--webui-port", str(free_port(host)), "--work-dir", work, self.url])
        deadline = time.monotonic() + timeout
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"cluster {name} exited with {p.returncode}: {self.log_tail(name)}")
            try:
                alive = [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
            except OSError:
                alive = []
            if len(alive) == self.num_workers:
                return self
            if time.monotonic() > deadline:
                tail = self.log_tail("master")
                self.stop()
                raise RuntimeError(f"cluster did not come up in {timeout:.0f} s: {tail}")
            time.sleep(0.5)

    def state(self) -> dict:
        """The master's JSON status (workers, applications)."""
        with urllib.request.urlopen(self.ui + "/json/", timeout=5) as r:
            return json.load(r)

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.root, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def executor_pids(self) -> List[int]:
        """Pids of the executor JVMs the workers launched (children of the worker processes)."""
        pids = []
        for name, p in self.procs.items():
            if name.startswith("worker"):
                pids.extend(_children(p.pid, "CoarseGrainedExecutorBackend"))
        return pids

    def stop(self) -> None:
        # Executors first (children of the workers, in their own process groups), then workers, then master.
        for pid in self.executor_pids():
            _kill(pid)
        for name in sorted(self.procs, key=lambda n: n == "master"):
            p = self.procs[name]
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        self.procs.clear()
        if not self.keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _children(pid: int, needle: str) -> List[int]:
    """Descendant pids of ``pid`` whose command line contains ``needle`` (from /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = set()
        try:  # a JVM starts children from any of its threads: read every thread's list
            for tid in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids.update(map(int, f.read().split()))
        except OSError:
            continue
        for k in sorted(kids):
            todo.append(k)
            try:
                cmd = open(f"/proc/{k}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmd:
                found.append(k)
    return found


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    with StandaloneCluster() as c:
        print(c.url, c.ui, c.worker_hosts, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
