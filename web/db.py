"""The request owns the SQLAlchemy session: opened on first use, closed at teardown."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from worker.db import SessionFactory, make_session_factory

EXTENSION = "tumorlens.sessions"


def init_app(app: Flask) -> None:
    """Bind a session factory for the configured store and close sessions after each request."""
    app.extensions[EXTENSION] = make_session_factory(app.config["DATABASE_URL"])
    app.teardown_appcontext(close_session)


def session_factory() -> SessionFactory:
    """Return the app's session factory (for functions that open their own transactions)."""
    return current_app.extensions[EXTENSION]


def db_session() -> Session:
    """Return this request's session, opening it on first use."""
    if "db_session" not in g:
        g.db_session = session_factory()()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    """Close the request's session; anything uncommitted is rolled back."""
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
