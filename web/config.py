"""The web app's configuration: the process settings mapped to Flask keys, then overrides."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from worker.settings import get_settings

# Flask keys may also come from the environment as TUMORLENS_WEB_<KEY>, for example
# TUMORLENS_WEB_SESSION_COOKIE_SECURE=false behind plain HTTP on a trusted network.
ENV_PREFIX = "TUMORLENS_WEB"


def from_settings() -> dict[str, Any]:
    """Return the Flask configuration derived from ``worker.settings``."""
    settings = get_settings()
    return {
        "SECRET_KEY": settings.secret_key,
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": settings.broker_url,
        "OUTPUT_DIR": settings.output_dir,
        "SCAN_ROOTS": list(settings.scan_roots),
        "UPLOAD_DIR": settings.home / "uploads",
        "DEFAULT_MODEL": settings.model,
        "OVERLAY_CACHE_DIR": settings.overlay_cache_dir,
        "OVERLAY_CACHE_BYTES": settings.overlay_cache_mb << 20,
    }


DEFAULTS: dict[str, Any] = {
    "SESSION_COOKIE_SECURE": None,  # None: secure unless debugging or testing (see finish)
    "REMEMBER_COOKIE_SECURE": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "tumorlens_session",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "PERMANENT_SESSION_LIFETIME": dt.timedelta(hours=12),
    "WTF_CSRF_TIME_LIMIT": 12 * 3600,  # a report left open over lunch can still cancel its job
    "MAX_CONTENT_LENGTH": 1 << 30,  # one upload request, compressed
    "MAX_FORM_PARTS": 20_000,  # many files picked at once
    "UPLOAD_MAX_FILE_BYTES": 200 << 20,
    "UPLOAD_MAX_TOTAL_BYTES": 4 << 30,
    "UPLOAD_MAX_ENTRIES": 20_000,
    "LOGIN_RATE_LIMIT": "10 per minute",
    "RATELIMIT_SWALLOW_ERRORS": True,  # a Redis hiccup must not lock everyone out
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    "REPORT_PAGE_SIZE": 50,
    "SERIES_PAGE_SIZE": 20,  # DICOM series per page of the report's series section
    "SERIES_STRIP_CAP": 200,  # slices shown in one series' strip; the rest are counted
    "OVERLAY_THREADS": os.cpu_count() or 1,  # overlays drawn at once by one web process
    "POLL_SECONDS": 1.5,
    "PROXY_COUNT": 0,  # reverse proxies in front that set X-Forwarded-For/-Proto (trusted hops)
}


def finish(config: dict[str, Any], debug: bool) -> None:
    """Fill the keys that depend on others: secure cookies and the rate-limit storage."""
    if config["SESSION_COOKIE_SECURE"] is None:
        config["SESSION_COOKIE_SECURE"] = not (debug or config.get("TESTING"))
    if config["REMEMBER_COOKIE_SECURE"] is None:
        config["REMEMBER_COOKIE_SECURE"] = config["SESSION_COOKIE_SECURE"]
    broker = config.get("BROKER_URL") or ""
    redis = broker.startswith(("redis://", "rediss://", "unix://"))
    config.setdefault("RATELIMIT_STORAGE_URI", broker if redis else "memory://")
