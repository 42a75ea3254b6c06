"""The main command's probes: which hosts serve this machine only, when the
development key refuses a host, and what answers on a port."""

from __future__ import annotations

import socket

import pytest

from callcenter.errors import ConfigurationError
from callcenter.ops import probes


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("no-such-host.invalid", False)],
)  # fmt: skip
def test_which_addresses_serve_this_machine_only(host, loopback):
    assert probes.loopback(host) is loopback


def test_a_secret_key_lets_the_web_server_serve_other_machines():
    probes.exposure_check(host="0.0.0.0", development_key=False)
    probes.exposure_check(host="127.0.0.1", development_key=True)
    with pytest.raises(ConfigurationError):
        probes.exposure_check(host="0.0.0.0", development_key=True)


@pytest.mark.parametrize(
    ("url", "shown"),
    [("redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
     ("redis://user:pw@host/1", "redis://user:***@host/1"),
     ("unix:///var/run/redis.sock", "unix:///var/run/redis.sock")],
)  # fmt: skip
def test_a_redis_url_is_shown_without_its_password(url, shown):
    assert probes.redact_url(url) == shown


def test_nothing_answers_on_a_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not probes.port_free("127.0.0.1", port)
    assert probes.port_free("127.0.0.1", port)
    assert not probes.redis_answers(f"redis://127.0.0.1:{port}/0")
    assert not probes.http_ok(f"http://127.0.0.1:{port}/healthz")
