"""Engines, sessions and migrations on real SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import PROJECT_ROOT
from worker import db
from worker.models import Base, Job, Model, Scan, ScanStatus


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:p%40ss@h:5/d", "postgresql+psycopg://u:p%40ss@h:5/d"),
    ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
    ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_normalize_url_points_postgres_at_psycopg3(url, expected):
    assert db.normalize_url(url) == expected


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'sub' / 'store.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_MS
    engine.dispose()


def test_foreign_keys_are_enforced(session_factory):
    with pytest.raises(IntegrityError):
        with db.session_scope(session_factory) as session:
            session.add(Scan(job_id=999_999, path="a.png"))


def test_session_scope_rolls_back_on_error(session_factory):
    with pytest.raises(RuntimeError):
        with db.session_scope(session_factory) as session:
            session.add(Model(digest="d" * 64, name="m", spec_path="/m/model.json", spec={}))
            session.flush()
            raise RuntimeError("boom")
    with db.session_scope(session_factory) as session:
        assert session.scalar(select(Model.id)) is None


def test_write_scope_takes_the_sqlite_write_lock_at_begin(tmp_path, sqlite_template):
    path = tmp_path / "store.db"
    path.write_bytes(sqlite_template.read_bytes())
    factory = db.make_session_factory(f"sqlite:///{path}")
    with db.write_scope(factory):
        other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    """Yield the URL of an empty database (no tables)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'store.db'}"
        return
    import psycopg

    admin = request.getfixturevalue("postgres_url").rsplit("/", 1)[0]
    name = f"tumorlens_empty_{abs(hash(str(tmp_path))) % 10**8}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin}/{name}"
    db.dispose_engines(close=True)
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _schema_diff(url: str) -> list:
    with db.make_engine(url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_head_on_an_empty_database_matches_the_models(empty_url):
    assert db.current_revision(empty_url) is None
    db.upgrade(empty_url)
    assert db.current_revision(empty_url) == db.head_revision()
    assert _schema_diff(empty_url) == []


def test_downgrade_to_base_and_back(empty_url):
    db.upgrade(empty_url)
    _downgrade(empty_url)
    with db.make_engine(empty_url).connect() as conn:
        tables = set(conn.dialect.get_table_names(conn))
    assert not tables & set(Base.metadata.tables)
    db.upgrade(empty_url)
    assert _schema_diff(empty_url) == []


SERIES_REVISION, BEFORE_SERIES = "1ce01377b6f3", "8c4e2a71d5b0"


def test_the_series_migration_keeps_what_was_recorded_before_it(empty_url):
    db.upgrade(empty_url, BEFORE_SERIES)
    engine = db.make_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (digest, name, spec_path, spec, created_at) "
                          "VALUES ('d', 'm', '/m/model.json', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO jobs (root, model_id, method, status, created_at) "
                          "VALUES ('/data', 1, 'gradcam', 'done', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO scans (job_id, path, status, attempts, updated_at) "
                          "VALUES (1, 'a.dcm', 'done', 1, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO results (scan_id, job_id, frame, width, height, predicted_class, "
                          "tumor_probability, probabilities, method, peak_x, peak_y, overlay, thumbnail, "
                          "heatmap, created_at) VALUES (1, 1, 0, 8, 8, 'tumor', 0.9, '{}', 'gradcam', 1, 1, "
                          "'o', 't', 'h', CURRENT_TIMESTAMP)"))
    # Rebuilding a SQLite table (scans gains a foreign key) must not delete what references it.
    db.upgrade(empty_url, SERIES_REVISION)
    with db.session_scope(db.make_session_factory(engine)) as session:
        job, scan = session.get(Job, 1), session.scalar(select(Scan))
        assert (job.all_series, scan.path, scan.series_id, scan.slice_index) == (False, "a.dcm", None, None)
        assert [r.tumor_probability for r in scan.results] == [0.9]
        scan.status = ScanStatus.SKIPPED
    _downgrade_to(empty_url, BEFORE_SERIES)
    with engine.connect() as conn:  # a scan skipped for its series is left to be analysed
        assert conn.execute(text("SELECT status FROM scans")).all() == [("pending",)]
        assert conn.execute(text("SELECT count(*) FROM results")).scalar() == 1
        assert "series" not in set(conn.dialect.get_table_names(conn))
    engine.dispose()


def _downgrade_to(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(db.alembic_config(url), revision)


def _downgrade(url: str) -> None:
    from alembic import command

    command.downgrade(db.alembic_config(url), "base")


def test_alembic_command_line_reads_the_same_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"PATH": "/usr/bin:/bin", "TUMORLENS_DATABASE_URL": url, "HOME": str(tmp_path)}
    alembic = PROJECT_ROOT / ".venv" / "bin" / "alembic"
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run([str(alembic if alembic.exists() else "alembic"), *args], env=env,
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr


def test_no_create_all_at_run_time():
    sources = [p for folder in ("worker", "web", "pipeline")
               for p in (PROJECT_ROOT / folder).rglob("*.py")]
    assert sources
    offenders = [str(p) for p in sources if "create_all(" in p.read_text(errors="replace")]
    assert offenders == []


def test_store_modules_do_not_import_tensorflow():
    code = ("import sys, worker.models, worker.db, worker.store, worker.jobs, worker.export;"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_job_rows_round_trip(session_factory):
    with db.session_scope(session_factory) as session:
        model = Model(digest="a" * 64, name="m", spec_path="/m/model.json", spec={"format": 1})
        session.add(Job(root="/data", model=model, method="gradcam"))
    with db.session_scope(session_factory) as session:
        job = session.scalar(select(Job))
        assert (job.status.value, job.model.name) == ("pending", "m")
        assert session.execute(text("SELECT status FROM jobs")).scalar() == "pending"
