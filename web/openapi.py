"""The OpenAPI 3 description of ``/api/``; tests/web checks it lists exactly the app's API routes."""

from __future__ import annotations

from typing import Any

from web.filters import ORDERS, SORTS, STATUSES
from worker.export import OOD_LIMIT


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


INT = {"type": "integer"}
NUMBER = {"type": "number"}
STRING = {"type": "string"}
JOB_ID = _param("job_id", "path", INT, "Job id.")
PAGE = [_param("page", "query", {**INT, "minimum": 1, "default": 1}, "Page number."),
        _param("per_page", "query", {**INT, "minimum": 1, "maximum": 500}, "Rows per page.")]
FILTERS = [
    _param("min_p", "query", {**NUMBER, "minimum": 0, "maximum": 1}, "Lowest tumor probability."),
    _param("max_p", "query", {**NUMBER, "minimum": 0, "maximum": 1}, "Highest tumor probability."),
    _param("predicted", "query", STRING, "Predicted class name."),
    _param("status", "query", {**STRING, "enum": list(STATUSES)}, "Scan status."),
    _param("q", "query", {**STRING, "maxLength": 200}, "Text the scan path contains."),
    _param("ood", "query", {**INT, "enum": [0, 1]},
           f"1: only scans outside the model's experience (`ood_score` above {OOD_LIMIT:g}); 0: only "
           "scans measured and within it. Scans not measured match neither."),
    _param("sort", "query", {**STRING, "enum": list(SORTS), "default": "probability"}, "Sort column."),
    _param("order", "query", {**STRING, "enum": list(ORDERS), "default": "desc"}, "Sort order."),
]
OOD = {"ood_score": {**NUMBER, "nullable": True,
                     "description": "Distance from the model's training data over its limit; "
                                    "null when the model does not measure it."},
       "out_of_distribution": {"type": "boolean", "nullable": True,
                               "description": f"True when `ood_score` is above {OOD_LIMIT:g}: the "
                                              "scan lies outside the model's experience and its "
                                              "label is unreliable; null when not measured."}}
ERROR = _json(_ref("Error"), "An error, explained in `error`.")
UNAUTHORIZED = _json(_ref("Error"), "Not signed in.")
CSRF_NOTE = ("Browser sessions send the page's CSRF token (meta `csrf-token`) in the "
             "`X-CSRFToken` header.")


def _get(summary: str, response: dict, parameters: list | None = None) -> dict:
    return {"get": {"summary": summary, "parameters": parameters or [],
                    "responses": {"200": response, "401": UNAUTHORIZED, "404": ERROR}}}


def _post(summary: str, response: dict, parameters: list | None = None, body: dict | None = None,
          created: bool = False) -> dict:
    operation = {"summary": summary, "description": CSRF_NOTE, "parameters": parameters or [],
                 "responses": {"201" if created else "200": response, "400": ERROR,
                               "401": UNAUTHORIZED, "409": ERROR, "503": ERROR}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {"post": operation}


PATHS: dict[str, Any] = {
    "/api/openapi.json": _get("This document.", _json({"type": "object"}, "OpenAPI 3 document.")),
    "/api/jobs": {
        **_get("List jobs, newest first.", _json(_ref("JobPage"), "A page of jobs."), PAGE),
        **_post("Start a job over a folder under a scan root.", _json(_ref("Job"), "The queued job."),
                body=_ref("StartJob"), created=True),
    },
    "/api/jobs/{job_id}": _get("A job and its progress.", _json(_ref("Job"), "The job."), [JOB_ID]),
    "/api/jobs/{job_id}/scans": _get("The job's report rows, filtered, sorted and paginated.",
                                     _json(_ref("RowPage"), "A page of rows."),
                                     [JOB_ID, *FILTERS, *PAGE]),
    "/api/jobs/{job_id}/neurons": _get(
        "Neurons most correlated with the class label.", _json(_ref("Neurons"), "Statistics."),
        [JOB_ID, _param("top", "query", {**INT, "minimum": 1, "default": 10}, "How many each way.")]),
    "/api/jobs/{job_id}/cancel": _post("Cancel a job.", _json(_ref("Job"), "The job."), [JOB_ID]),
    "/api/jobs/{job_id}/resume": _post("Queue a job's unfinished scans again.",
                                       _json(_ref("Job"), "The job."), [JOB_ID]),
    "/api/jobs/{job_id}/export": _get(
        "Download every scan's record (streamed).",
        {"description": "CSV or JSON array, as `tumorlens export`.",
         "content": {"text/csv": {"schema": STRING}, "application/json": {"schema": {"type": "array"}}}},
        [JOB_ID, _param("format", "query", {**STRING, "enum": ["csv", "json"], "default": "csv"},
                        "File format.")]),
    "/api/scans/{scan_id}": _get("A scan with its analysed frames.", _json(_ref("Scan"), "The scan."),
                                 [_param("scan_id", "path", INT, "Scan id.")]),
    "/api/folders": _get("One folder of a scan root.", _json(_ref("Folder"), "The listing."),
                         [_param("root", "query", {**INT, "default": 0}, "Index of the scan root."),
                          _param("path", "query", STRING, "Folder relative to the root.")]),
    "/api/models": _get("Models and CAM methods a job can use.",
                        _json({"type": "object"}, "Model keys and method names.")),
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "status"],
              "properties": {"error": STRING, "status": INT}},
    "StartJob": {"type": "object", "required": ["root", "method"], "properties": {
        "root": INT, "path": STRING, "model": {**STRING, "default": "default"}, "method": STRING}},
    "Progress": {"type": "object", "properties": {
        k: INT for k in ("total", "pending", "done", "failed", "duplicate", "skipped", "flagged")}
        | {k: {**NUMBER, "nullable": True} for k in ("rate", "eta_seconds", "seconds")}
        | {"fraction": NUMBER}},
    "Job": {"type": "object", "properties": {
        "id": INT, "status": STRING, "finished": {"type": "boolean"}, "root": STRING,
        "model": {"type": "object"}, "method": STRING, "error": {**STRING, "nullable": True},
        "created_at": STRING, "started_at": STRING, "finished_at": STRING,
        "progress": _ref("Progress"), "links": {"type": "object"}}},
    "Row": {"type": "object", "properties": {
        "scan_id": INT, "frame": INT, "path": STRING, "status": STRING, "error": STRING,
        "predicted_class": STRING, "tumor_probability": NUMBER, **OOD,
        "links": {"type": "object"}}},
    "Scan": {"type": "object", "properties": {
        "id": INT, "job_id": INT, "path": STRING, "status": STRING, "error": STRING,
        "results": {"type": "array", "items": {"type": "object"}}}},
    "Neurons": {"type": "object", "properties": {
        "n_scans": INT, "n_neurons": INT, "top_positive": {"type": "array"},
        "top_negative": {"type": "array"}}},
    "Folder": {"type": "object", "properties": {
        "root": INT, "path": STRING, "scans": INT, "folders": {"type": "array"}}},
}
for _name, _key, _item in (("JobPage", "jobs", "Job"), ("RowPage", "rows", "Row")):
    SCHEMAS[_name] = {"type": "object", "properties": {
        _key: {"type": "array", "items": _ref(_item)}, "total": INT, "page": INT, "pages": INT,
        "per_page": INT}}


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3 document of the API."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "tumorlens API", "version": "1",
                 "description": "Jobs, reports and scans of tumorlens. Every route needs a signed-in "
                                "session (sign in at /login)."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"session": {"type": "apiKey", "in": "cookie",
                                                       "name": "tumorlens_session"}}},
        "security": [{"session": []}],
    }
