"""What several command groups share: the store, and the errors meant for the person at the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from worker import db


def open_store():
    """Return a session factory for a store at the current schema, or exit with the reason."""
    try:
        return db.make_session_factory(db.prepare_store())
    except db.StoreNotReady as exc:
        raise click.ClickException(str(exc)) from exc


def user_errors() -> tuple[type[Exception], ...]:
    """Return the exception types whose message is meant for the person at the terminal."""
    from pipeline.data.annotations import AnnotationError
    from pipeline.data.datasets import DataError
    from pipeline.model.loading import ModelError
    from pipeline.io.scans import ScanError
    from pipeline.model.spec import SpecError

    return AnnotationError, DataError, ModelError, ScanError, SpecError, FileNotFoundError


def load_annotations(source: Path | None):
    from pipeline.data.annotations import Annotations

    return Annotations(source)


def emit(content: dict, data: Path, as_json: bool, printer) -> None:
    """Print a report for a person with ``printer``, or as JSON; either way it names its data."""
    content["data"] = str(data)
    if as_json:
        click.echo(json.dumps(content, indent=2))
    else:
        printer(content)
