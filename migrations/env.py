"""Alembic environment: migrates the store named by the tumorlens settings.

``tumorlens db upgrade`` (``worker.db.upgrade``) passes the URL in the config; the plain
``alembic`` command falls back to the same settings object the application reads.
"""

from __future__ import annotations

from alembic import context

from worker.db import database_url, make_engine
from worker.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return database_url(config.get_main_option("sqlalchemy.url") or None)


def _configure(**kwargs) -> None:
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    context.configure(target_metadata=target_metadata, compare_type=True,
                      render_as_batch=_url().startswith("sqlite"), **kwargs)


def run_migrations_offline() -> None:
    """Emit the SQL without connecting (``alembic upgrade --sql``)."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Connect and migrate."""
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:  # before the migration's transaction: the pragma is a no-op inside one
                _sqlite_foreign_keys(connection, False)
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_sqlite_foreign_keys(connection)
            if sqlite:
                _sqlite_foreign_keys(connection, True)
    finally:
        engine.dispose()


def _sqlite_foreign_keys(connection, on: bool) -> None:
    """Switch SQLite's foreign keys for this connection, outside any transaction.

    Batch mode rebuilds a SQLite table (copy, DROP, rename); with foreign keys on, the DROP
    deletes the rows that reference the table, cascading: rebuilding ``scans`` would delete every
    result, rebuilding ``jobs`` everything. SQLite's own procedure for such changes turns them off
    and checks them after (https://www.sqlite.org/lang_altertable.html#otheralter).
    """
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _check_sqlite_foreign_keys(connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
