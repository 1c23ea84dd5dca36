"""Sign-in, anonymous refusal on every route, safe redirects, cookies, CSRF and the login limit."""

from __future__ import annotations

import re

import pytest
from werkzeug.routing import Rule

from tests.web.conftest import PASSWORD, csrf_token, sign_in
from worker.models import User

PUBLIC = {"auth.login", "health.healthz", "static"}


def concrete_url(rule: Rule) -> str:
    """Fill a rule's variables with plausible values (ids 1, the first of an ``any`` choice)."""
    def value(match: re.Match) -> str:
        converter = match.group(1) or ""
        if converter.startswith("any("):
            return converter[4:].split(",")[0].strip()
        return "1" if converter.startswith("int") else "x"
    return re.sub(r"<(?:([^:>]+):)?[^>]+>", value, rule.rule)


def protected_routes(app) -> list[tuple[str, str, str]]:
    return [(method, concrete_url(rule), rule.endpoint) for rule in app.url_map.iter_rules()
            if rule.endpoint not in PUBLIC
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]


def test_every_route_refuses_anonymous_visitors(app, client):
    routes = protected_routes(app)
    assert len(routes) >= 20  # the whole app, not an empty iteration
    for method, url, endpoint in routes:
        response = client.open(url, method=method)
        if url.startswith("/api/"):
            assert response.status_code == 401, (method, url)
            assert response.get_json()["error"] == "Sign in first."
        elif method == "GET":
            assert response.status_code == 302, (method, url)
            assert response.headers["Location"].startswith("/login?next="), (method, url)
        else:  # a form post without a session is refused before anything runs
            assert response.status_code in (302, 400), (method, url, endpoint)


def test_public_routes_answer_without_signing_in(client):
    assert client.get("/login").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_sign_in_then_reach_the_page_asked_for(client, user_id):
    first = client.get("/jobs/new?root=0")
    assert first.headers["Location"] == "/login?next=/jobs/new?root%3D0"
    response = sign_in(client, "alice", PASSWORD, next_url="/jobs/new?root%3D0")
    assert response.status_code == 302
    assert response.headers["Location"] == "/jobs/new?root=0"
    assert client.get("/jobs").status_code == 200


@pytest.mark.parametrize("password", ["wrong", "", PASSWORD.upper()])
def test_wrong_password_is_refused(client, user_id, password):
    response = sign_in(client, "alice", password)
    assert response.status_code in (200, 401)
    assert client.get("/jobs").status_code == 302


def test_unknown_user_and_inactive_user_are_refused(client, session, user_id):
    assert sign_in(client, "nobody", PASSWORD).status_code == 401
    session.get(User, user_id).is_active = False
    session.commit()
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 401
    assert "Wrong user name or password." in response.get_data(as_text=True)


def test_a_deactivated_user_loses_the_session(signed_in, session, user_id):
    assert signed_in.get("/jobs").status_code == 200
    session.get(User, user_id).is_active = False
    session.commit()
    assert signed_in.get("/jobs").status_code == 302


@pytest.mark.parametrize("target", ["//evil.example/x", "http://evil.example/", "/\\evil.example",
                                    "https:/evil.example", "javascript:alert(1)", "jobs", "/%0d%0aX"])
def test_next_never_leaves_the_site(client, user_id, target):
    from urllib.parse import quote

    response = sign_in(client, "alice", PASSWORD, next_url=quote(target, safe=""))
    location = response.headers["Location"]
    assert location in ("/jobs", "/%0d%0aX"), location
    assert "evil" not in location


def test_sign_out_needs_csrf_and_ends_the_session(signed_in):
    assert signed_in.post("/logout").status_code == 400
    token = csrf_token(signed_in.get("/jobs").get_data(as_text=True))
    assert signed_in.post("/logout", data={"csrf_token": token}).status_code == 302
    assert signed_in.get("/jobs").status_code == 302


def test_session_cookie_flags(make_app, user_id):
    app = make_app(TESTING=False)
    client = app.test_client()
    response = sign_in(client, "alice", PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_secure_flag_can_be_turned_off(make_app, user_id):
    app = make_app(TESTING=False, SESSION_COOKIE_SECURE=False)
    response = sign_in(app.test_client(), "alice", PASSWORD)
    assert "Secure" not in response.headers["Set-Cookie"]


def test_post_without_csrf_token_is_refused(signed_in):
    for url in ("/jobs", "/jobs/upload", "/jobs/1/cancel", "/jobs/1/resume"):
        response = signed_in.post(url, data={"root": "0", "path": ""})
        assert response.status_code == 400, url
        assert "did not come from this site" in response.get_data(as_text=True)


def test_api_post_needs_the_csrf_header(signed_in):
    refused = signed_in.post("/api/jobs", json={"root": 0, "path": ""})
    assert refused.status_code == 400
    assert "CSRF" in refused.get_json()["error"]
    token = csrf_token(signed_in.get("/jobs").get_data(as_text=True))
    passed = signed_in.post("/api/jobs", json={"root": 0, "path": ""}, headers={"X-CSRFToken": token})
    assert passed.status_code == 503  # past CSRF; refused only because no broker is configured
    assert "No task queue is configured" in passed.get_json()["error"]


def test_login_attempts_are_rate_limited(make_app, user_id):
    client = make_app(LOGIN_RATE_LIMIT="3 per minute").test_client()
    statuses = [sign_in(client, "alice", "wrong").status_code for _ in range(4)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429
    assert sign_in(client, "alice", PASSWORD).status_code == 429  # even the right password waits


def test_security_headers_forbid_inline_script(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in response.get_data(as_text=True)


def test_login_limit_is_kept_in_redis_when_a_broker_is_set(make_app, user_id, redis_url):
    import redis

    app = make_app(BROKER_URL=redis_url, LOGIN_RATE_LIMIT="2 per minute")
    assert app.config["RATELIMIT_STORAGE_URI"] == redis_url
    first, second = app.test_client(), app.test_client()
    assert [sign_in(first, "alice", "wrong").status_code for _ in range(2)] == [401, 401]
    assert sign_in(second, "alice", PASSWORD).status_code == 429  # same address, shared count
    assert redis.Redis.from_url(redis_url).keys("LIMITS*")  # the count lives in Redis


def test_behind_a_proxy_the_limit_counts_each_client(make_app, user_id):
    client = make_app(PROXY_COUNT=1, LOGIN_RATE_LIMIT="1 per minute").test_client()

    def attempt(address: str) -> int:
        page = client.get("/login", headers={"X-Forwarded-For": address})
        return client.post("/login", headers={"X-Forwarded-For": address}, data={
            "username": "alice", "password": "wrong",
            "csrf_token": csrf_token(page.get_data(as_text=True))}).status_code

    assert [attempt("10.0.0.1"), attempt("10.0.0.1"), attempt("10.0.0.2")] == [401, 429, 401]


def test_flask_keys_come_from_the_environment(settings_env, sqlite_url, folders, monkeypatch):
    from tests.web.conftest import build_app

    monkeypatch.setenv("TUMORLENS_WEB_SESSION_COOKIE_SECURE", "false")
    monkeypatch.setenv("TUMORLENS_WEB_REPORT_PAGE_SIZE", "25")
    settings_env()
    app = build_app(sqlite_url, folders, TESTING=False)
    assert app.config["SESSION_COOKIE_SECURE"] is False and app.config["REPORT_PAGE_SIZE"] == 25
