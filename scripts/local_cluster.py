"""A real Spark standalone cluster on loopback, from the installed pyspark: one master, N workers.

Each daemon is a separate JVM started with pyspark's own `spark-class`, each
worker with its own cores and memory, all bound to 127.0.0.1.  Everything
started here is stopped by process id (the whole process tree of each daemon,
executors and Python workers included).

    python scripts/local_cluster.py run -- spark-submit ARGS...   # start, run the command, stop

Workers can advertise GPUs (`worker_gpus`, one list of addresses per worker): each worker runs
the project's scripts/gpu_discovery.sh with a stand-in `nvidia-smi` on its PATH that prints
those indexes, so Spark schedules GPUs that do not exist (the fake-GPU cluster of the tests).
"""
from __future__ import annotations

import contextlib
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
from dataclasses import dataclass, field
from typing import Optional

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> str:
    import pyspark
    return os.path.dirname(pyspark.__file__)


@dataclass
class LocalCluster:
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "2g"
    work_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="sparkcnn-cluster-"))
    worker_gpus: Optional[list] = None      # per worker: the GPU addresses it advertises
    procs: dict = field(default_factory=dict)

    def _env(self, **extra) -> dict:
        env = dict(os.environ, SPARK_HOME=spark_home(), SPARK_LOCAL_IP="127.0.0.1",
                   PYSPARK_PYTHON=sys.executable, SPARK_LOG_DIR=self.work_dir, **extra)
        env.pop("PYSPARK_GATEWAY_PORT", None)
        return env

    def _daemon(self, name: str, *args: str, env: Optional[dict] = None) -> None:
        log = open(os.path.join(self.work_dir, f"{name}.log"), "wb")
        self.procs[name] = subprocess.Popen([os.path.join(spark_home(), "bin", "spark-class"), *args],
                                            env=env or self._env(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _gpu_env(self, k: int, wdir: str) -> Optional[dict]:
        """Worker k's environment advertising its fake GPUs through the real discovery script."""
        if not self.worker_gpus:
            return None
        addresses = [str(a) for a in self.worker_gpus[k]]
        bin_dir = os.path.join(wdir, "fake-nvidia")
        os.makedirs(bin_dir, exist_ok=True)
        smi = os.path.join(bin_dir, "nvidia-smi")
        with open(smi, "w") as f:
            f.write("#!/bin/sh\n# stand-in for nvidia-smi --query-gpu=index --format=csv,noheader\n")
            f.write("".join(f"echo {a}\n" for a in addresses))
        os.chmod(smi, 0o755)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_discovery.sh")
        opts = (f"-Dspark.worker.resource.gpu.amount={len(addresses)} "
                f"-Dspark.worker.resource.gpu.discoveryScript={script}")
        return self._env(PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), SPARK_WORKER_OPTS=opts)

    def start(self, timeout: float = 90) -> "LocalCluster":
        self.port, self.ui_port = free_port(), free_port()
        self._daemon("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(self.port), "--webui-port", str(self.ui_port))
        for k in range(self.workers):
            wdir = os.path.join(self.work_dir, f"worker{k}")
            os.makedirs(wdir, exist_ok=True)
            self._daemon(f"worker{k}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                         "--cores", str(self.cores_per_worker), "--memory", self.memory_per_worker,
                         "--work-dir", wdir, "--webui-port", str(free_port()), self.url,
                         env=self._gpu_env(k, wdir))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.alive_workers()) == self.workers:
                return self
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.work_dir}/{name}.log")
            time.sleep(0.5)
        raise TimeoutError(f"{self.workers} workers did not register within {timeout}s; logs in {self.work_dir}")

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> list:
        try:
            return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
        except OSError:
            return []

    def executor_logs(self, name: str = "stderr") -> dict:
        """worker name -> the text of every executor's `name` log file under that worker's work dir."""
        out = {}
        for k in range(self.workers):
            texts = []
            for root, _, files in os.walk(os.path.join(self.work_dir, f"worker{k}")):
                if name in files:
                    with open(os.path.join(root, name), errors="replace") as f:
                        texts.append(f.read())
            out[f"worker{k}"] = "\n".join(texts)
        return out

    def kill(self, name: str) -> None:
        """SIGKILL a daemon and every process under it (a worker's executors and Python workers)."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def submit_command(cluster: LocalCluster, app: str, *app_args: str, py_files: str, extra_conf=()) -> list:
    """spark-submit of a sparkcnn job to the cluster, library shipped with --py-files."""
    conf = ["--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.executor.memory=1g",
            "--conf", "spark.ui.showConsoleProgress=false"]
    for c in extra_conf:
        conf += ["--conf", c]
    return [os.path.join(spark_home(), "bin", "spark-submit"), "--master", cluster.url,
            "--driver-memory", "1g", "--py-files", py_files, *conf, app, *app_args]


def main(argv) -> int:
    if len(argv) < 2 or argv[0] != "run" or argv[1] != "--":
        print(__doc__)
        return 2
    with LocalCluster() as cluster:
        print(f"[cluster] master {cluster.url}, {cluster.workers} workers x {cluster.cores_per_worker} core(s)")
        cmd = [a.replace("{MASTER}", cluster.url) for a in argv[2:]]
        return subprocess.call(cmd, env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
