"""Shared fixtures: settings in a temporary home, migrated stores on SQLite and PostgreSQL.

``database_url`` is parametrised over both back ends; a test that takes it (or ``session_factory``)
runs twice. PostgreSQL runs get one fresh database per test session (per xdist worker), created
on 127.0.0.1:5432 with trust auth, emptied after each test and dropped at the end; they are skipped
with the reason when the server is unreachable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")
SETTINGS_VARS = ("HOME", "DATABASE_URL", "BROKER_URL", "OUTPUT_DIR", "SCAN_ROOTS", "SECRET_KEY",
                 "MODEL", "BATCH_SIZE", "ENV")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return ``../shared/data`` or skip when this machine does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DATA}, absent on this machine")
    return SHARED_DATA


def _clear_cached_settings() -> None:
    from worker.db import dispose_engines
    from worker.settings import get_settings

    get_settings.cache_clear()
    dispose_engines(close=True)


@contextlib.contextmanager
def home_only(home: Path) -> Iterator[None]:
    """Run the block with no TUMORLENS_* setting but TUMORLENS_HOME=home (module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in SETTINGS_VARS:
            patch.delenv(f"TUMORLENS_{name}", raising=False)
        patch.setenv("TUMORLENS_HOME", str(home))
        _clear_cached_settings()
        try:
            yield
        finally:
            _clear_cached_settings()


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable]:
    """Return ``configure(**values)``: set TUMORLENS_* (HOME in tmp) and return fresh settings."""
    from worker.settings import get_settings

    for name in SETTINGS_VARS:
        monkeypatch.delenv(f"TUMORLENS_{name}", raising=False)

    def configure(**values):
        values.setdefault("home", tmp_path / "home")
        for name, value in values.items():
            monkeypatch.setenv(f"TUMORLENS_{name.upper()}", str(value))
        _clear_cached_settings()
        return get_settings()

    yield configure
    _clear_cached_settings()


@pytest.fixture
def settings(settings_env):
    """Settings with TUMORLENS_HOME in a temporary folder (embedded SQLite store, no broker)."""
    return settings_env()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """Return a SQLite file migrated to head once; tests copy it."""
    from worker.db import upgrade

    path = tmp_path_factory.mktemp("store") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _postgres_admin_url() -> str | None:
    import psycopg

    for user in PG_USERS:
        try:
            with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres",
                                 connect_timeout=3):
                return f"postgresql://{user}@{PG_HOST}:{PG_PORT}"
        except psycopg.Error:
            continue
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Create and migrate a fresh PostgreSQL database for this test session; drop it after."""
    import psycopg

    from worker.db import dispose_engines, upgrade

    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {' or '.join(PG_USERS)}"
                    " (scripts/services.sh starts it)")
    name = f"tumorlens_test_{os.getpid()}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin}/{name}"
    upgrade(url)
    yield url
    dispose_engines(close=True)
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_postgres(url: str) -> None:
    from worker.db import get_engine
    from worker.models import Base

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leaked session fails loudly
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of an empty store migrated to head, on SQLite then on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    empty_postgres(url)


@pytest.fixture
def session_factory(database_url: str):
    """Return a session factory bound to the test's store."""
    from worker.db import make_session_factory

    return make_session_factory(database_url)


@pytest.fixture
def store_settings(settings_env, database_url: str):
    """Settings whose store is the test's ``database_url`` (HOME in a temporary folder)."""
    return settings_env(database_url=database_url)
