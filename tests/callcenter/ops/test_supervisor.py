"""The main command's supervisor starts, watches and stops child processes."""

from __future__ import annotations

import io

import pytest

from callcenter.ops.supervisor import ChildExited, StopRequested, Supervisor
from tests.fixtures.processes import group_gone


def test_stop_all_ends_each_child_and_what_it_started():
    out = io.StringIO()
    with Supervisor(out=out, stop_timeout=5) as sup:
        child = sup.start("sleepy", ["bash", "-c", "sleep 60 & echo started; wait"])
        sup.wait_until("the child's output", lambda: "sleepy | started" in out.getvalue(), timeout=10)

    assert group_gone(child.pid)
    assert f"stopping sleepy (pid {child.pid})" in out.getvalue()


def test_a_child_that_exits_ends_the_watch_with_its_status():
    with Supervisor(out=io.StringIO()) as sup:
        sup.start("quitter", ["bash", "-c", "exit 3"])
        with pytest.raises(ChildExited, match="quitter exited with status 3"):
            sup.watch()


def test_waiting_ends_with_a_timeout_or_a_stop_request():
    with Supervisor(out=io.StringIO()) as sup:
        with pytest.raises(TimeoutError, match="the moon was not ready after 0 s"):
            sup.wait_until("the moon", lambda: False, timeout=0.3, interval=0.05)
        sup.request_stop()
        with pytest.raises(StopRequested):
            sup.wait_until("the moon", lambda: False, timeout=5)
        sup.watch()  # returns at once after a stop request


def test_a_child_started_nicer_runs_at_a_lower_cpu_priority_and_so_do_its_children():
    import os

    out = io.StringIO()
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with Supervisor(out=out, stop_timeout=5) as sup:
        child = sup.start("lazy", ["bash", "-c", "sleep 60 & echo $!; wait"], nice=5)
        sup.wait_until("the grandchild's pid", lambda: "lazy | " in out.getvalue(), timeout=10)
        grandchild = int(out.getvalue().split("lazy | ")[1].split()[0])

        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, own + 5)
        assert os.getpriority(os.PRIO_PROCESS, grandchild) == min(19, own + 5)
        assert f"started lazy (pid {child.pid}) at nice +5: bash" in out.getvalue()
        with pytest.raises(ValueError, match="nice must be >= 0"):
            sup.start("greedy", ["true"], nice=-1)
    assert group_gone(child.pid)
