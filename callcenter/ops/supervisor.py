"""A small supervisor for the child processes of the main command.

Each child runs in its own session (so a Ctrl-C in the terminal reaches only
the supervisor, which then stops the children in reverse start order), dies
with the supervisor if that is killed (``PR_SET_PDEATHSIG``), may run at a
lower CPU priority (``nice``), and has its output copied line by line with
its name in front.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

_PR_SET_PDEATHSIG = 1


class ChildExited(RuntimeError):
    """A child stopped while it was meant to run."""

    def __init__(self, name: str, returncode: int) -> None:
        super().__init__(f"{name} exited with status {returncode}")
        self.name = name
        self.returncode = returncode


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived; stop everything."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child after fork
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(nice: int) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the child after fork
        _die_with_parent()
        if nice:
            os.nice(nice)  # inherited by what the child starts (a worker's pool processes)

    return setup


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes]
    pump: threading.Thread = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


class Supervisor:
    """Start children, wait until they are ready, watch them, stop them all.

    Use as a context manager: leaving the block stops every child, whatever
    happened inside.
    """

    def __init__(self, *, out: TextIO | None = None, stop_timeout: float = 15.0) -> None:
        self.out = out or sys.stdout
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self._out_lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    # --- output ---

    def say(self, message: str) -> None:
        with self._out_lock:
            self.out.write(message + "\n")
            self.out.flush()

    def _pump(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.say(f"{name:>10} | {line}")
        stream.close()

    # --- children ---

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        nice: int = 0,
    ) -> Child:
        """Start ``argv`` as the child ``name``; ``nice`` > 0 lowers its CPU
        priority (and its children's) by that much."""
        if nice < 0:
            raise ValueError(f"nice must be >= 0 (only lowering the priority needs no privilege), got {nice}")
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(nice),
        )
        pump = threading.Thread(target=self._pump, args=(name, process.stdout), name=f"pump-{name}", daemon=True)
        pump.start()
        child = Child(name=name, argv=tuple(argv), process=process, pump=pump)
        self.children.append(child)
        niceness = f" at nice +{nice}" if nice else ""
        self.say(f"started {name} (pid {process.pid}){niceness}: {' '.join(argv)}")
        return child

    def check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise ChildExited(child.name, code)

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (Ctrl-C, SIGTERM)."""
        return self._stop.is_set()

    def wait_until(self, what: str, ready: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> None:
        """Poll ``ready()`` until it is true; a child dying or a stop request
        ends the wait early."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if self._stop.is_set():
                raise StopRequested()
            if ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")
            self._stop.wait(interval)

    def watch(self) -> None:
        """Block until a stop is requested (returns) or a child exits (raises)."""
        while not self._stop.is_set():
            self.check_alive()
            self._stop.wait(0.5)

    def stop_all(self) -> None:
        """SIGTERM each child's process group in reverse start order, SIGKILL
        what is still there after ``stop_timeout``."""
        for child in reversed(self.children):
            self._stop_child(child)
        self.children.clear()

    def _stop_child(self, child: Child) -> None:
        if child.alive():
            self.say(f"stopping {child.name} (pid {child.pid})")
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {self.stop_timeout:.0f} s: killing it")
                _signal_group(child.pid, signal.SIGKILL)
                child.process.wait()
        # Grandchildren (a worker's pool processes) share the child's group.
        _signal_group(child.pid, signal.SIGKILL)
        child.pump.join(timeout=5)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def install_stop_handlers(supervisor: Supervisor) -> None:
    """Turn the first SIGINT/SIGTERM into ``StopRequested`` in the main thread
    (later ones only say that the stop is under way)."""
    state = {"stopping": False}

    def handler(signum: int, frame: object) -> None:
        supervisor.request_stop()
        if state["stopping"]:
            supervisor.say("already stopping...")
            return
        state["stopping"] = True
        supervisor.say(f"received {signal.Signals(signum).name}: stopping")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
