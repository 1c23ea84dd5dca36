"""The ``tumorlens`` command line run in the test's own process, and the tiny model it scans with."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.builders.models import build_model
from worker.cli import main


def tumorlens(*args: str, expect: int | None = 0):
    """Run the command line in this process; check its exit code unless ``expect`` is None."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


def export(job_id: int) -> list[dict]:
    return json.loads(tumorlens("export", job_id, "--format", "json").stdout)


def scan_json(folder: Path, *options: str) -> dict:
    return json.loads(tumorlens("scan", folder, "--local", "--json", *options).stdout)


def small_model(tmp_path: Path) -> Path:
    """Build (once per test folder) a tiny random-weight CNN with 32 px inputs."""
    folder = tmp_path / "model"
    if not (folder / "model.json").exists():
        build_model(folder, "sequential", input_size=(32, 32))
    return folder
