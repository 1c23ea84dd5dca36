"""Jinja filters and globals: numbers, times and sizes in words people read."""

from __future__ import annotations

import datetime as dt
from numbers import Number

from flask import Flask

from web.folders import COUNT_CAP
from web.progress import aware, is_finished
from web.series import KEY_SHOWN, short_key
from worker.export import OOD_LIMIT, is_out_of_distribution, model_threshold


def percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.0f} %"


def duration(seconds: float | None) -> str:
    """Format seconds as '42 s', '3 min 05 s' or '2 h 07 min'."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def rate(per_second: float | None) -> str:
    return "" if not per_second else f"{per_second:.1f} scans/s"


def eta(seconds: float | None) -> str:
    return "" if seconds is None else f"about {duration(seconds)} left"


def when(moment: dt.datetime | None) -> str:
    return "–" if moment is None else aware(moment).strftime("%Y-%m-%d %H:%M UTC")


def count_label(n: int) -> str:
    return f"{n}+" if n >= COUNT_CAP else str(n)


def filesize(n: int) -> str:
    size, unit = float(n), "bytes"
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.0f} {unit}"


def probability(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def times_limit(ood_score: float | None) -> str:
    """Format a distance over the model's limit ('1.7'), never rounding an outside one down to it."""
    if ood_score is None:
        return "–"
    text = f"{ood_score:.3g}"
    if ood_score > OOD_LIMIT >= float(text):
        text = f"{ood_score:.6g}"
    return text


def card_metrics(card: dict | None) -> list[tuple[str, str]]:
    """Return the numeric entries of a model card (one level of nesting flattened)."""
    found: list[tuple[str, str]] = []
    for key, value in (card or {}).items():
        if isinstance(value, dict):
            found += [(f"{key} · {k}", f"{v:.3g}") for k, v in value.items()
                      if isinstance(v, Number) and not isinstance(v, bool)]
        elif isinstance(value, Number) and not isinstance(value, bool):
            found.append((key, f"{value:.3g}"))
    return found


def skip_reason(reason: str | None) -> str:
    """Return why a series was not analysed, as "skipped: …"."""
    reason = (reason or "no reason recorded").strip()
    return reason if reason.startswith("skipped") else f"skipped: {reason}"


def bare_reason(reason: str | None) -> str:
    """Return why a series was skipped without the leading "skipped: " (a status badge says it)."""
    return skip_reason(reason).removeprefix("skipped").lstrip(": ")


def init_app(app: Flask) -> None:
    """Register the filters and globals."""
    for f in (percent, duration, rate, eta, when, count_label, filesize, probability, times_limit,
              skip_reason, bare_reason):
        app.jinja_env.filters[f.__name__] = f
    app.jinja_env.globals.update(is_finished=is_finished, card_metrics=card_metrics,
                                 out_of_distribution=is_out_of_distribution,
                                 model_threshold=model_threshold, short_key=short_key,
                                 key_shown=KEY_SHOWN)
