"""``/healthz``: is the store reachable, and the broker when one is configured?"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from kombu import Connection
from sqlalchemy import text

from web.db import db_session

bp = Blueprint("health", __name__)
BROKER_TIMEOUT = 2.0


def check_database() -> str:
    """Return "ok" or why the store cannot be queried."""
    try:
        db_session().execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "unhealthy", reported, not raised
        return f"error: {type(exc).__name__}: {exc}".splitlines()[0]
    return "ok"


def check_broker() -> str:
    """Return "ok", "not configured" or why the broker cannot be reached."""
    url = current_app.config.get("BROKER_URL")
    if not url:
        return "not configured"
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # kombu raises driver-specific errors
        return f"error: {type(exc).__name__}"
    return "ok"


@bp.get("/healthz")
def healthz():
    """Answer 200 when every configured dependency answers, 503 otherwise."""
    checks = {"database": check_database(), "broker": check_broker()}
    healthy = all(v in ("ok", "not configured") for v in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", checks=checks), 200 if healthy else 503
