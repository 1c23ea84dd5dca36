"""The app as a whole: no TensorFlow in the web process, the OpenAPI document, health checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

from tests.conftest import PROJECT_ROOT

NO_TF_PROBE = textwrap.dedent("""
    import json, sys
    from web import create_app
    app = create_app({"TESTING": True, "BROKER_URL": None})
    client = app.test_client()
    statuses = [client.get(u).status_code for u in ("/login", "/healthz", "/jobs", "/api/jobs")]
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")
                   or m in ("pipeline.model.loading", "pipeline.explain.cams", "pipeline.train.training", "pipeline.explain.analysis"))
    print(json.dumps({"statuses": statuses, "heavy": heavy}))
""")


def test_web_process_never_imports_tensorflow(tmp_path):
    env = {**os.environ, "TUMORLENS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run([sys.executable, "-c", NO_TF_PROBE], env=env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["statuses"][0] == 200 and report["statuses"][2] == 302


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_openapi_lists_exactly_the_api_routes(app, signed_in):
    document = signed_in.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            routes.setdefault(_openapi_path(rule.rule), set()).update(
                m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(ops) for path, ops in document["paths"].items()}
    assert documented == routes
    for path, operations in document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for operation in operations.values():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == names, path


def test_openapi_references_resolve(signed_in):
    document = signed_in.get("/api/openapi.json").get_json()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(document)))
    assert refs and refs <= set(document["components"]["schemas"])


def test_health_answers_200_with_the_store_and_no_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "broker": "not configured"}


def test_health_answers_503_when_the_broker_is_down(make_app):
    response = make_app(BROKER_URL="redis://127.0.0.1:1/0").test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and body["checks"]["broker"].startswith("error")
    assert body["checks"]["database"] == "ok"


def test_health_answers_503_when_the_store_is_unreachable(make_app):
    app = make_app(url="postgresql://nobody@127.0.0.1:1/none")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"].startswith("error")


def test_health_answers_200_with_a_live_broker(make_app, redis_url):
    response = make_app(BROKER_URL=redis_url).test_client().get("/healthz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"]["broker"] == "ok"


def test_methods_match_the_analysis():
    from pipeline.explain.analysis import METHODS
    from web.starting import METHOD_LABELS, METHODS as WEB_METHODS

    assert set(WEB_METHODS) == set(METHODS) == set(METHOD_LABELS)
