"""The tumorlens web app: sign-in, starting runs, jobs, reports, scans and a JSON API.

Built by ``create_app``; it reads the store and enqueues jobs, and never imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the process settings, with ``config`` overriding any key."""
    from web import api, auth, db, errors, health, overlays, security, templating
    from web.config import DEFAULTS, ENV_PREFIX, finish, from_settings
    from web.extensions import csrf, limiter, login_manager
    from web.views import BLUEPRINTS

    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(from_settings())
    app.config.from_prefixed_env(ENV_PREFIX)
    app.config.update(config or {})
    finish(app.config, app.debug)
    if app.config["PROXY_COUNT"]:
        # Behind TLS-terminating proxies: the client's address (for the login limit) and scheme.
        hops = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    db.init_app(app)
    overlays.init_app(app)
    app.before_request(auth.require_login)  # before CSRF, so anonymous calls get 401, not 400
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    security.init_app(app)
    errors.init_app(app)
    templating.init_app(app)
    for blueprint in (auth.bp, health.bp, *BLUEPRINTS, api.bp):
        app.register_blueprint(blueprint)
    return app
