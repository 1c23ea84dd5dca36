"""Engines and sessions for the store, and its migration to the current schema.

SQLite (the embedded default) runs in WAL mode with foreign keys and a busy timeout, and
SQLAlchemy emits BEGIN itself so that reads are repeatable; a session that is going to write can
ask for ``BEGIN IMMEDIATE`` (``write_scope``) so two processes never deadlock upgrading a read
lock. PostgreSQL goes through psycopg 3. The edge (a CLI command, a task, a request) owns the
session; data functions in ``worker.store`` and ``worker.jobs`` take it as an argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
SQLITE_BUSY_MS = 30_000
IMMEDIATE = "tumorlens_begin_immediate"  # execution option read by the SQLite begin hook
_ENGINES: dict[str, Engine] = {}

SessionFactory = Callable[[], Session]


def normalize_url(url: str) -> str:
    """Return ``url`` with PostgreSQL URLs pointed at the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def database_url(url: str | None = None) -> str:
    """Return the normalised store URL: ``url`` or the configured one."""
    return normalize_url(url or get_settings().database_url)


def is_sqlite(url: str) -> bool:
    """Tell whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def is_embedded(url: str) -> bool:
    """Tell whether ``url`` is the default SQLite file inside ``TUMORLENS_HOME``."""
    settings = get_settings()
    return normalize_url(url) == normalize_url(f"sqlite:///{settings.home / 'tumorlens.db'}")


def sqlite_path(url: str) -> Path | None:
    """Return the file of a SQLite URL, or None for in-memory or non-SQLite URLs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # SQLAlchemy, not the driver, emits BEGIN (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fsync on checkpoint only
    cursor.close()


def _sqlite_on_begin(connection) -> None:
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def get_engine(url: str | None = None) -> Engine:
    """Return the process-wide engine for ``url`` (default: the configured store)."""
    url = database_url(url)
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def dispose_engines(close: bool = False) -> None:
    """Drop the cached engines. By default (after fork) the pooled connections are abandoned, not
    closed: closing a connection inherited from the parent would end the parent's session too."""
    for engine in _ENGINES.values():
        engine.dispose(close=close)
    _ENGINES.clear()


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the store's connection settings."""
    url = normalize_url(url)
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def make_session_factory(url_or_engine: str | Engine | None = None) -> sessionmaker[Session]:
    """Return a session factory bound to an engine, a URL or the configured store."""
    if isinstance(url_or_engine, Engine):
        engine = url_or_engine
    else:
        engine = get_engine(database_url(url_or_engine))
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def session_scope(factory: SessionFactory | None = None) -> Iterator[Session]:
    """Open a session, commit when the block succeeds, roll back when it raises, close it."""
    session = (factory or make_session_factory())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextlib.contextmanager
def write_scope(factory: SessionFactory) -> Iterator[Session]:
    """Like ``session_scope``, but take SQLite's write lock at BEGIN (no-op elsewhere)."""
    with session_scope(factory) as session:
        session.connection(execution_options={IMMEDIATE: True})
        yield session


def alembic_config(url: str | None = None):
    """Return an Alembic config for the project's migrations and ``url``."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.attributes["configure_logger"] = False  # the calling command owns logging
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # ConfigParser interpolation treats "%" specially; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the store at ``url`` (default: configured) to ``revision``."""
    from alembic import command

    url = database_url(url)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


class StoreNotReady(RuntimeError):
    """The store cannot be used as it is; the message says what to do."""


def displayed_url(url: str) -> str:
    """Return ``url`` with any password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def prepare_store(url: str | None = None) -> str:
    """Return the store URL once its schema is current: the embedded SQLite file is migrated,
    any other database must have been migrated with ``tumorlens db upgrade``."""
    url = database_url(url)
    if is_embedded(url):
        upgrade(url)
        return url
    try:
        current = current_revision(url)
    except OperationalError as exc:
        raise StoreNotReady(f"cannot reach the database at {displayed_url(url)}: "
                            f"{str(exc.orig).strip()}") from exc
    if current != head_revision():
        raise StoreNotReady(f"the database at {displayed_url(url)} is not at the current schema "
                            f"(it is at {current or 'an empty schema'}): run `tumorlens db upgrade`")
    return url


def current_revision(url: str | None = None) -> str | None:
    """Return the store's Alembic revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(database_url(url)).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """Return the newest revision among the project's migrations."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
