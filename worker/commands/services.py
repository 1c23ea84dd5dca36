"""Long-running services: a Celery worker and the web server.

The web server always runs in a process of its own, started from the import string
``web:create_app()``: nothing below ``web/`` is imported here. ``tumorlens up`` (``up.py``) runs
both, with an embedded Redis, on one machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from worker.settings import get_settings

WEB_APP = "web:create_app()"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def cpu_count() -> int:
    """Return how many cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tensorflow_env(processes: int) -> dict[str, str]:
    """Return the settings that share the cores among ``processes`` TensorFlow processes."""
    threads = str(max(1, cpu_count() // processes))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
            "OMP_NUM_THREADS": threads,
            "TF_CPP_MIN_LOG_LEVEL": "1"}  # keeps most of TensorFlow's start-up notices out of the log


def worker_argv(concurrency: int, queues: str, loglevel: str, hostname: str | None) -> list[str]:
    """Return the ``celery worker`` arguments for these options."""
    return ["worker", "--pool=prefork", f"--concurrency={concurrency}", f"--queues={queues}",
            f"--loglevel={loglevel}", f"--hostname={hostname or f'tumorlens-{os.getpid()}@%h'}"]


def require_broker() -> str:
    """Return the configured broker URL or stop with what to do about its absence."""
    url = get_settings().broker_url
    if not url:
        raise click.ClickException("TUMORLENS_BROKER_URL is not set: point it at a Redis server "
                                   "(redis://host:6379/0) or run everything with `tumorlens up`")
    return url


@click.command()
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Worker processes, each with its own model (default: one per core).")
@click.option("-Q", "--queues", default=None,
              help="Comma-separated queues to take work from (default: all of tumorlens's).")
@click.option("-l", "--loglevel", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="INFO", show_default=True)
@click.option("-n", "--hostname", default=None, help="Node name (default: tumorlens-PID@host).")
def worker(concurrency: int | None, queues: str | None, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker that walks folders and analyses queued scans."""
    require_broker()
    concurrency = concurrency or cpu_count()
    for name, value in tensorflow_env(concurrency).items():
        os.environ.setdefault(name, value)  # read by TensorFlow when a child first imports it
    click.echo(f"{concurrency} worker processes on {cpu_count()} cores, "
               f"{os.environ['TF_NUM_INTRAOP_THREADS']} TensorFlow threads each", err=True)
    from worker.celery_app import QUEUES, celery_app

    queues = queues or ",".join(QUEUES)
    celery_app.worker_main(worker_argv(concurrency, queues, loglevel.upper(), hostname))


def in_container() -> bool:
    """Tell whether this process runs inside a Docker or Podman container."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def web_argv(host: str, port: int, production: bool, workers: int | None) -> list[str]:
    """Return the command line that serves the web app (gunicorn or Flask's own server)."""
    if not production:
        return [sys.executable, "-m", "flask", "--app", WEB_APP, "run", "--host", host,
                "--port", str(port), "--no-reload"]
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--access-logfile", "-"]
    if workers:
        argv += ["--workers", str(workers)]  # otherwise gunicorn reads WEB_CONCURRENCY
    return argv + [WEB_APP]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--production/--development", default=None,
              help="gunicorn (default in production and in containers) or Flask's server.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="gunicorn worker processes (default: $WEB_CONCURRENCY or 1).")
def web(host: str, port: int, production: bool | None, workers: int | None) -> None:
    """Serve the web UI and JSON API."""
    if production is None:
        production = get_settings().env == "production" or in_container()
    argv = web_argv(host, port, production, workers)
    os.execv(argv[0], argv)  # the server replaces this process, so signals reach it directly


COMMANDS = [worker, web]
