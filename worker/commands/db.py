"""``tumorlens db upgrade`` and ``tumorlens user create``: the store's schema and its users."""

from __future__ import annotations

import click

from worker import db
from worker.store import create_user


@click.group("db")
def db_group() -> None:
    """Manage the store's schema (Alembic migrations)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Migrate to this revision.")
def upgrade(revision: str) -> None:
    """Migrate the configured database to the newest schema (creating the SQLite file)."""
    url = db.database_url()
    try:
        db.upgrade(url, revision)
    except Exception as exc:  # a person needs the cause, not Alembic's traceback
        raise click.ClickException(f"cannot migrate {db.displayed_url(url)}: {exc}") from exc
    click.echo(f"{db.displayed_url(url)} is at revision {db.current_revision(url)}")


@click.group("user")
def user_group() -> None:
    """Manage the accounts that may sign in to the web interface."""


@user_group.command("create")
@click.argument("username")
@click.password_option(help="The password (asked for twice when not given).")
def user_create(username: str, password: str) -> None:
    """Create a web user with a salted password hash."""
    try:
        url = db.prepare_store()
        with db.session_scope(db.make_session_factory(url)) as session:
            user = create_user(session, username, password)
    except (ValueError, db.StoreNotReady) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created user {user.username!r}")


COMMANDS = [db_group, user_group]
