"""``tumorlens db upgrade`` and ``user create``: the store's schema and the web's accounts."""

from __future__ import annotations

from sqlalchemy import select

from tests.builders.cli import tumorlens
from worker.db import current_revision, head_revision, make_session_factory, session_scope
from worker.models import User


def test_db_upgrade_creates_the_embedded_store(settings):
    result = tumorlens("db", "upgrade")
    assert (settings.home / "tumorlens.db").is_file()
    assert current_revision(settings.database_url) == head_revision()
    assert f"is at revision {head_revision()}" in result.output


def test_user_create_hashes_the_password_and_refuses_a_taken_name(settings):
    assert "created user 'ana'" in tumorlens("user", "create", "ana", "--password", "pw-1").output
    again = tumorlens("user", "create", "ana", "--password", "pw-2", expect=1)
    assert "already exists" in again.output
    with session_scope(make_session_factory(settings.database_url)) as session:
        (user,) = session.scalars(select(User))
        assert user.username == "ana" and "pw-1" not in user.password_hash


def test_a_database_that_is_not_migrated_asks_for_db_upgrade(settings_env, tmp_path):
    settings_env(database_url=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    result = tumorlens("export", "1", expect=1)
    assert "not at the current schema" in result.output and "tumorlens db upgrade" in result.output
