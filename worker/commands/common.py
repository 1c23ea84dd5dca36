"""What several command groups share: the store, and the errors meant for the person at the terminal."""

from __future__ import annotations

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
