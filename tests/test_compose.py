"""docker-compose.yml: valid with its secrets, refused without them, every command a real one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) parses the compose file")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
SECRETS = {"POSTGRES_PASSWORD": "compose-test-password", "TUMORLENS_SECRET_KEY": "compose-test-key"}
OUR_IMAGE = "tumorlens:latest"


def compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``docker-compose config`` with exactly ``env`` added to a clean environment."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    empty_env_file = tmp_path / "empty.env"  # a developer's .env must not fill in the secrets
    empty_env_file.write_text("")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([binary, "--file", str(COMPOSE_FILE), "--env-file", str(empty_env_file),
                           "config"], env={**clean, **env}, capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=60)


@pytest.fixture
def resolved(tmp_path: Path) -> dict:
    """Return the compose file as docker-compose resolves it with the secrets set."""
    done = compose_config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_config_is_valid_with_the_secrets(resolved: dict) -> None:
    services = resolved["services"]
    assert set(services) == {"redis", "postgres", "migrate", "worker", "web", "flower"}
    assert SECRETS["POSTGRES_PASSWORD"] in services["worker"]["environment"]["TUMORLENS_DATABASE_URL"]
    assert services["web"]["environment"]["TUMORLENS_SECRET_KEY"] == SECRETS["TUMORLENS_SECRET_KEY"]


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_config_fails_without_a_secret(tmp_path: Path, missing: str) -> None:
    done = compose_config(tmp_path, {k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr


def test_worker_scales(resolved: dict) -> None:
    worker = resolved["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_services_start_in_order(resolved: dict) -> None:
    services = resolved["services"]
    for name in ("worker", "web"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == depends["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["redis"] and "healthcheck" in services["postgres"]


def test_scans_are_read_only_and_outputs_shared(resolved: dict) -> None:
    services = resolved["services"]
    for name in ("worker", "web"):
        volumes = services[name]["volumes"]
        assert any(v.endswith(":/scans:ro") for v in volumes), volumes
        assert "outputs:/data/outputs:rw" in volumes


def our_commands(resolved: dict) -> list[tuple[str, list[str]]]:
    """Return (service, full command line) for each service that runs the tumorlens image."""
    commands = []
    for name, service in sorted(resolved["services"].items()):
        if service.get("image") == OUR_IMAGE:
            entrypoint = service.get("entrypoint") or ["tumorlens"]
            commands.append((name, [*entrypoint, *service.get("command", [])]))
    return commands


def test_every_service_command_exists(resolved: dict) -> None:
    commands = our_commands(resolved)
    assert {name for name, _ in commands} == {"migrate", "worker", "web", "flower"}
    for name, argv in commands:
        # --help is handled before the command runs, but only after its options parsed: a
        # misspelt command or option fails here as it would in the container.
        done = subprocess.run(as_local_command(argv) + ["--help"], capture_output=True, text=True,
                              cwd=PROJECT_ROOT, env=service_env(resolved, name), timeout=120)
        assert done.returncode == 0, f"{name}: {' '.join(argv)}\n{done.stdout}\n{done.stderr}"
        assert "Usage:" in done.stdout


def as_local_command(argv: list[str]) -> list[str]:
    """Map a container command line onto this checkout's interpreter."""
    program, *args = argv
    if program == "tumorlens":
        return [sys.executable, "-c", "from worker.cli import main; main(prog_name='tumorlens')",
                *args]
    assert program == "celery", f"unexpected program {program}"
    return [sys.executable, "-m", "celery", *args]


def service_env(resolved: dict, name: str) -> dict[str, str]:
    """Return this process's environment plus the service's (production settings included)."""
    return {**os.environ, **resolved["services"][name].get("environment", {})}
