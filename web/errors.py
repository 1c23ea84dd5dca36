"""Errors answered in words: JSON for the API, a page for people."""

from __future__ import annotations

from flask import Flask, jsonify, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from web.auth import is_api_request

MESSAGES = {
    400: "The request could not be understood.",
    404: "There is nothing here.",
    405: "That action is not allowed here.",
    429: "Too many attempts; wait a minute and try again.",
    500: "Something went wrong on the server; the error has been logged.",
}


def error_response(status: int, message: str):
    """Return ``message`` with ``status`` as JSON for the API or as an error page."""
    if is_api_request():
        return jsonify(error=message, status=status), status
    return render_template("error.html", status=status, message=message), status


def _csrf(exc: CSRFError):
    return error_response(400, "The form has expired or did not come from this site "
                               f"({exc.description}). Reload the page and try again.")


def _too_large(_exc: RequestEntityTooLarge):
    return error_response(413, "The upload is too large; send fewer or smaller files at a time.")


def _http(exc: HTTPException):
    code = exc.code or 500
    described = exc.description if code < 500 and exc.description != type(exc).description else None
    return error_response(code, described or MESSAGES.get(code, exc.name))


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http)
