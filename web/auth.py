"""Sign-in and sign-out; every other page and API route requires a signed-in user."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (Blueprint, Response, current_app, flash, jsonify, redirect, render_template,
                   request, session, url_for)
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from web.db import db_session
from web.extensions import limiter, login_manager
from worker.models import User

bp = Blueprint("auth", __name__)
PUBLIC_ENDPOINTS = frozenset({"auth.login", "health.healthz", "static"})
# Checked when the user name is unknown, so both answers take the same time.
_DUMMY_HASH = generate_password_hash("tumorlens-timing-equaliser")


@dataclass(frozen=True)
class SignedIn(UserMixin):
    """The signed-in user as the request sees it (not an ORM object, so nothing detaches)."""

    id: int
    username: str


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=150)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@login_manager.user_loader
def load_user(user_id: str) -> SignedIn | None:
    """Return the session's user if it still exists and is active."""
    if not user_id.isdigit():
        return None
    user = db_session().get(User, int(user_id))
    return SignedIn(user.id, user.username) if user and user.is_active else None


@login_manager.unauthorized_handler
def unauthorized() -> Response:
    """Answer anonymous API calls with 401 JSON and send page visitors to the sign-in form."""
    if is_api_request():
        return jsonify(error="Sign in first.", status=401), 401
    target = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=target))


def is_api_request() -> bool:
    """Tell whether the current request is for the JSON API."""
    return request.path == "/api" or request.path.startswith("/api/")


def require_login() -> Response | None:
    """Refuse anonymous requests to anything but the sign-in page, the health check and assets."""
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    return login_manager.unauthorized()


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a relative URL on this site, else the jobs page."""
    fallback = url_for("jobs.index")
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return fallback
    return target


def authenticate(username: str, password: str) -> User | None:
    """Return the active user with these credentials, or None."""
    user = db_session().scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active:
        return None
    return user


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def login():
    """Show the sign-in form and sign the user in."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.username.data, form.password.data)
        if user is not None:
            session.clear()  # nothing from before sign-in survives into the signed-in session
            login_user(SignedIn(user.id, user.username))
            return redirect(safe_next(request.args.get("next")))
        flash("Wrong user name or password.", "error")
    status = 401 if request.method == "POST" else 200
    return render_template("login.html", form=form), status


@bp.post("/logout")
def logout():
    """Sign the user out."""
    logout_user()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
