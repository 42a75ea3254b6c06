"""Killable service processes for fault runs and tests: a private
redis-server (on a free port, never a shared one), Daphne and Celery workers
pointed at it, each started, killed and restarted by its caller, with its
output in a log file. ``bench/fault_run.py`` and the fault tests use them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def stop_process(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, and its whole
    group: SIGTERM, then SIGKILL after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def service_env(*, var_dir: Path, redis_url: str, **extra: object) -> dict[str, str]:
    """This process's environment for a service process, with its Redis and
    runtime folder (``CALLCENTER_VAR_DIR``) and ``extra`` on top."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "CALLCENTER_VAR_DIR": str(var_dir),
        "PYTHONUNBUFFERED": "1",
        **{k: str(v) for k, v in extra.items()},
    }


READY_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Kill the whole process group (a worker's pool children too) at once."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)

    def wait_for(self, text: str, *, after: int = 0, timeout: float = READY_TIMEOUT_S) -> None:
        """Until ``text`` appears in the log after offset ``after``."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[after:]:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {text!r} in {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.2)


def redis_service(tmp: Path) -> tuple[Service, str]:
    """A redis-server on a free port, keeping nothing on disk: a restart
    comes back empty, as a Redis without persistence does."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/bootstrap.sh installs it)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp)]  # fmt: skip
    return Service("redis", argv, dict(os.environ), tmp / "redis.log"), f"redis://127.0.0.1:{port}/0"


def wait_redis(url: str, timeout: float = 20) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def daphne_service(env: dict[str, str], tmp: Path, port: int | None = None, name: str = "web") -> tuple[Service, int]:
    port = port or free_port()
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "callcenter.asgi:application"]
    return Service(name, argv, env, tmp / f"{name}.log"), port


def wait_http(url: str, service: Service, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if not service.alive():
            raise RuntimeError(f"{service.name} exited:\n{service.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout} s:\n{service.log()[-4000:]}")
        time.sleep(0.2)


def worker_service(env: dict[str, str], tmp: Path, name: str, *, beat: bool = False) -> Service:
    argv = [
        sys.executable, "-m", "celery", "-A", "callcenter", "worker", "-c", "1", "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    if beat:
        argv += ["-B", "-s", str(tmp / f"{name}-beat-schedule")]
    return Service(name, argv, env, tmp / f"{name}.log")
