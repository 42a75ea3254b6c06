"""The main command: run the whole system on one machine.

    python -m callcenter.ops.run [--demo] [--host 127.0.0.1] [--port 8000] [--no-worker] ...

Steps: apply migrations; start a private Redis on a unix socket under
``var/run/`` unless ``REDIS_URL`` is set; start the web server (Daphne) and
two Celery workers as child processes: ``worker`` consumes the recognition queue (live calls)
and runs beat, ``adaptation`` consumes only the adaptation queue (caller
adaptation, meta-training), one process at a lower CPU priority, so that
recognition never waits behind it; wait until the web server answers, both
workers answer a control ping and a ``system.ping`` task has made the round
trip; print where the admin is; on Ctrl-C or SIGTERM stop every child.

``--demo`` also creates a demo admin user when there is no superuser yet,
then places a demo call (``callcenter.tools.demo``): a synthetic caller, or the
WAV file given with ``--wav``, streamed over the Twilio protocol at real-time
pace, its partial and final transcripts printed as the agents' feed shows
them, and the admin URL of the stored call. ``--demo-exit`` stops everything
after the call instead of serving on.

Without ``DJANGO_SECRET_KEY`` the settings use a published development key
with debug pages on: fine on this machine (the default ``--host
127.0.0.1``), so a ``--host`` that other machines reach (``0.0.0.0``, a LAN
address) is refused with one line until the key is set.

``start()`` is the reusable part.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from callcenter.entry import EXIT_CONFIGURATION, setup_django
from callcenter.errors import ConfigurationError
from callcenter.ops import probes
from callcenter.ops.supervisor import ChildExited, StopRequested, Supervisor, install_stop_handlers

# Longest path a unix socket may have (sun_path is 108 bytes, NUL included).
_MAX_SOCKET_PATH = 107
DEMO_ADMIN_USERNAME = "admin"
# How much lower the adaptation worker's CPU priority is than the others'.
ADAPTATION_NICE = 10


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 8000
    web: bool = True
    worker: bool = True
    migrate: bool = True
    demo: bool = False
    demo_exit: bool = False
    wav: str | None = None
    ready_timeout: float = 90.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"port must be within 1..65535, got {self.port}")
        if self.ready_timeout <= 0:
            raise ConfigurationError(f"ready timeout must be positive, got {self.ready_timeout}")
        if self.wav is not None and not Path(self.wav).is_file():
            raise ConfigurationError(f"--wav: no such file: {self.wav}")
        if (self.demo or self.demo_exit) and not (self.web and self.worker):
            raise ConfigurationError("the demo call needs the web server and the worker (drop --no-web/--no-worker)")


@dataclass(frozen=True)
class Running:
    """Where the started system answers."""

    http_url: str
    admin_url: str
    health_ws_url: str
    redis_url: str
    worker_name: str | None
    adaptation_worker_name: str | None
    # (username, password or None) of the demo admin, with --demo.
    admin_login: tuple[str, str | None] | None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "callcenter.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _migrate(sup: Supervisor) -> None:
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", interactive=False, verbosity=0)
    connections.close_all()
    sup.say("database is migrated")


def demo_admin_ensure(*, var_dir: Path) -> tuple[str, str | None]:
    """Create a superuser ``admin`` with a random password unless a superuser
    exists. Returns the username and the password where it is known (kept in
    ``var/demo-admin.txt``, readable only by its owner)."""
    from django.contrib.auth import get_user_model
    from django.db import connections

    credentials_file = var_dir / "demo-admin.txt"
    users = get_user_model().objects
    try:
        if users.filter(is_superuser=True).exists():
            if users.filter(username=DEMO_ADMIN_USERNAME, is_superuser=True).exists() and credentials_file.exists():
                return DEMO_ADMIN_USERNAME, credentials_file.read_text().strip()
            return users.filter(is_superuser=True).order_by("pk").first().get_username(), None
        password = secrets.token_urlsafe(12)
        users.create_superuser(DEMO_ADMIN_USERNAME, email="", password=password)
    finally:
        connections.close_all()
    var_dir.mkdir(parents=True, exist_ok=True)
    credentials_file.touch(mode=0o600)
    credentials_file.write_text(password + "\n")
    return DEMO_ADMIN_USERNAME, password


def _start_private_redis(sup: Supervisor, socket_path: str, *, timeout: float) -> None:
    if len(socket_path.encode()) > _MAX_SOCKET_PATH:
        raise ConfigurationError(
            f"the private Redis socket path is longer than {_MAX_SOCKET_PATH} bytes: {socket_path}; "
            "set CALLCENTER_VAR_DIR to a shorter folder or REDIS_URL to a running Redis"
        )
    if probes.redis_answers(f"unix://{socket_path}"):
        sup.say(f"using the private Redis already running at {socket_path}")
        return
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise ConfigurationError(
            "redis-server is not installed: run scripts/bootstrap.sh (Debian package redis-server) "
            "or set REDIS_URL to a running Redis"
        )
    run_dir = Path(socket_path).parent
    run_dir.mkdir(parents=True, exist_ok=True)
    Path(socket_path).unlink(missing_ok=True)
    sup.start(
        "redis",
        [
            redis_server,
            "--port", "0",
            "--unixsocket", socket_path,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(run_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ],
    )  # fmt: skip
    sup.wait_until("the private Redis", lambda: probes.redis_answers(f"unix://{socket_path}"), timeout=timeout)


def _worker_round_trip(sup: Supervisor, *, timeout: float) -> dict:
    """Send ``system.ping`` through the queue (by name: the backend never
    imports ``tasks/``) and wait for its result."""
    from callcenter.celery import app as celery_app

    result = celery_app.send_task("system.ping")
    try:
        sup.wait_until("the system.ping round trip", result.ready, timeout=timeout)
        return result.get(timeout=1)
    finally:
        result.forget()


def start(sup: Supervisor, opts: Options) -> Running:
    """Bring the system up under ``sup``; returns once everything answers."""
    from django.conf import settings

    probe_host = probes.local_host(opts.host)
    http_url = f"http://{probes.url_host(probe_host)}:{opts.port}"
    if opts.web:
        probes.exposure_check(host=opts.host, development_key=settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY)
        if settings.DEBUG and not probes.loopback(opts.host):
            sup.say(f"warning: DJANGO_DEBUG is on and --host {opts.host} serves other machines: debug pages show code")
    if opts.web and not probes.port_free(opts.host, opts.port):
        raise ConfigurationError(f"port {opts.port} on {opts.host} is in use: choose another with --port")

    probes.database_check()
    _redis_start_or_check(sup, opts)
    if opts.migrate:
        _migrate(sup)
    admin_login = demo_admin_ensure(var_dir=settings.VAR_DIR) if opts.demo else None

    env = _child_env()
    if opts.web:
        sup.start(
            "web",
            [sys.executable, "-m", "daphne", "-b", opts.host, "-p", str(opts.port), "callcenter.asgi:application"],
            env=env,
        )
    worker_name, adaptation_worker_name = _workers_start(sup, env) if opts.worker else (None, None)
    if opts.web:
        sup.wait_until("the web server", lambda: probes.http_ok(f"{http_url}/healthz"), timeout=opts.ready_timeout)
        sup.say(f"web server answers at {http_url}/healthz")
    if opts.worker:
        _workers_wait(sup, [("the worker", worker_name), ("the adaptation worker", adaptation_worker_name)],
                      timeout=opts.ready_timeout)  # fmt: skip
    return Running(
        http_url=http_url,
        admin_url=f"{http_url}/admin/",
        health_ws_url=f"ws://{probes.url_host(probe_host)}:{opts.port}/ws/health/",
        redis_url=settings.REDIS_URL,
        worker_name=worker_name,
        adaptation_worker_name=adaptation_worker_name,
        admin_login=admin_login,
    )


def _redis_start_or_check(sup: Supervisor, opts: Options) -> None:
    """The private Redis (``EMBEDDED_REDIS_SOCKET``), or ``REDIS_URL``'s answering."""
    from django.conf import settings

    if settings.EMBEDDED_REDIS_SOCKET:
        _start_private_redis(sup, settings.EMBEDDED_REDIS_SOCKET, timeout=opts.ready_timeout)
    elif probes.redis_answers(settings.REDIS_URL):
        sup.say(f"using Redis at {probes.redact_url(settings.REDIS_URL)}")
    else:
        raise ConfigurationError(f"cannot reach Redis at {probes.redact_url(settings.REDIS_URL)} (REDIS_URL)")


def _workers_start(sup: Supervisor, env: dict[str, str]) -> tuple[str, str]:
    """The recognition worker (with beat) and the adaptation worker (one
    process, lower CPU priority); returns their names."""
    from django.conf import settings

    from callcenter.celery import ADAPTATION_QUEUE, RECOGNITION_QUEUE

    worker_name = f"callcenter-{os.getpid()}@{socket.gethostname()}"
    adaptation_worker_name = f"callcenter-adaptation-{os.getpid()}@{socket.gethostname()}"
    Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
    celery_worker = [sys.executable, "-m", "celery", "-A", "callcenter", "worker", "-l", "info"]
    sup.start(
        "worker",
        [
            *celery_worker, "-Q", RECOGNITION_QUEUE,
            "-c", str(settings.CELERY_WORKER_CONCURRENCY), "-n", worker_name,
            "--without-gossip", "--without-mingle",
            # Beat inside the worker: the sweeper and periodic meta-training (one machine, one beat).
            "-B", "-s", str(Path(settings.VAR_DIR) / "celerybeat-schedule"),
        ],
        env=env,
    )  # fmt: skip
    sup.start(
        "adaptation",
        [
            *celery_worker, "-Q", ADAPTATION_QUEUE, "-c", "1", "-n", adaptation_worker_name,
            "--without-gossip", "--without-mingle",
        ],
        env=env,
        nice=ADAPTATION_NICE,
    )  # fmt: skip
    return worker_name, adaptation_worker_name


def _workers_wait(sup: Supervisor, workers: list[tuple[str, str]], *, timeout: float) -> None:
    """Until each worker answers a control ping, then ``system.ping`` made the round trip."""
    from callcenter.celery import app as celery_app

    for what, name in workers:
        sup.wait_until(what, lambda name=name: bool(celery_app.control.ping(destination=[name], timeout=0.5)),
                       timeout=timeout)  # fmt: skip
    answer = _worker_round_trip(sup, timeout=timeout)
    sup.say(f"worker {answer['worker']} answered system.ping ({answer['customers']} customers in the database)")


def _banner(running: Running) -> str:
    lines = ["", "=" * 64, "The call center is running."]
    lines.append(f"  Admin:          {running.admin_url}")
    lines.append(f"  Agent page:     {running.http_url}/agent/")
    if running.admin_login is None:
        lines.append("  Log in as:      a superuser (create one with `python manage.py createsuperuser`)")
    else:
        username, password = running.admin_login
        if password:
            lines.append(f"  Log in as:      {username} / {password}")
        else:
            lines.append(f"  Log in as:      {username} (existing superuser; password not known here)")
    lines.append(f"  Health:         {running.http_url}/healthz")
    lines.append(f"  Pipeline check: {running.health_ws_url}")
    lines += ["Press Ctrl-C to stop.", "=" * 64, ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m callcenter.ops.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the web server binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="web server port (default 8000)")
    parser.add_argument("--no-web", dest="web", action="store_false", help="do not start the web server")
    parser.add_argument("--no-worker", dest="worker", action="store_false", help="do not start the Celery workers")
    parser.add_argument("--no-migrate", dest="migrate", action="store_false", help="skip `migrate`")
    parser.add_argument(
        "--demo", action="store_true", help="create a demo admin user if there is no superuser, then place a demo call"
    )
    parser.add_argument("--wav", metavar="FILE", help="the demo call streams this audio file (implies --demo)")
    parser.add_argument("--demo-exit", action="store_true", help="stop after the demo call (implies --demo)")
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for each service")
    args = parser.parse_args(argv)
    if args.wav or args.demo_exit:
        args.demo = True
    return Options(**vars(args))


def _demo_call(sup: Supervisor, running: Running, opts: Options) -> bool:
    """Place the demo call; False if it could not be placed (the system keeps running)."""
    from callcenter.asr import AudioError, SynthesisError
    from callcenter.tools.demo import run_demo_call

    def watchdog() -> None:
        sup.check_alive()
        if sup.stopping:
            raise StopRequested()

    try:
        outcome = run_demo_call(
            http_url=running.http_url, admin_url=running.admin_url, say=sup.say, watchdog=watchdog, wav=opts.wav
        )
    except (AudioError, SynthesisError, OSError) as exc:
        sup.say(f"error: the demo call could not be placed: {exc}")
        return False
    lines = ["", "=" * 64]
    if outcome.call_admin_url is None:
        lines.append("The demo call did not reach the agents' feed; see the log above.")
    else:
        lines.append(f"The demo call is stored: {outcome.call_admin_url}")
        if outcome.spoken:
            lines.append(f"  Spoken:      {' | '.join(outcome.spoken)}")
        lines.append(f"  Recognized:  {' | '.join(outcome.recognized)}")
        if outcome.wer is not None:
            lines.append(f"  Word error rate: {outcome.wer:.2f}")
    lines += ["=" * 64, ""]
    sup.say("\n".join(lines))
    return outcome.call_admin_url is not None


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(argv)
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIGURATION
    setup_django()
    sup = Supervisor()
    install_stop_handlers(sup)
    started = time.monotonic()
    try:
        with sup:
            running = start(sup, opts)
            sup.say(f"ready in {time.monotonic() - started:.1f} s")
            sup.say(_banner(running))
            if opts.demo:
                placed = _demo_call(sup, running, opts)
                if opts.demo_exit:
                    sup.say("stopping after the demo call (--demo-exit)")
                    return 0 if placed else 1
            sup.watch()
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except StopRequested:
        pass
    except (ChildExited, TimeoutError) as exc:
        print(f"error: {exc}; everything was stopped", file=sys.stderr)
        return 1
    sup.say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
