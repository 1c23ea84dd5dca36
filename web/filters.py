"""The report's filter and sort, read from query arguments and written back into links."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping

from worker.models import ScanStatus

SORTS = ("probability", "path", "status")
ORDERS = ("asc", "desc")
STATUSES = tuple(s.value for s in ScanStatus)
MAX_TEXT = 200


class FilterError(ValueError):
    """A filter argument that cannot be used; the message is meant for a person."""


@dataclass(frozen=True)
class ScanFilter:
    min_p: float | None = None
    max_p: float | None = None
    predicted: str | None = None
    status: str | None = None
    text: str | None = None
    ood: bool | None = None  # True: only scans outside the model's experience; False: measured, within
    sort: str = "probability"
    order: str = "desc"

    @property
    def descending(self) -> bool:
        return self.order == "desc"

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "ScanFilter":
        """Read a filter from query arguments, raising FilterError on a value that makes no sense."""
        flt = cls(min_p=_probability(args, "min_p"), max_p=_probability(args, "max_p"),
                  predicted=_text(args, "predicted"), status=_choice(args, "status", STATUSES, None),
                  text=_text(args, "q"), ood=_ood(args),
                  sort=_choice(args, "sort", SORTS, "probability"),
                  order=_choice(args, "order", ORDERS, "desc"))
        if flt.min_p is not None and flt.max_p is not None and flt.min_p > flt.max_p:
            raise FilterError("The lowest tumor probability is above the highest.")
        return flt

    def to_args(self) -> dict[str, str]:
        """Return the query arguments that reproduce this filter (defaults left out)."""
        default = ScanFilter()
        names = {"text": "q"}
        return {names.get(f.name, f.name): _arg(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def _arg(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _probability(args: Mapping[str, str], name: str) -> float | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"{name} must be a number between 0 and 1, not {raw[:20]!r}.") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise FilterError(f"{name} must be between 0 and 1.")
    return value


def _text(args: Mapping[str, str], name: str) -> str | None:
    raw = (args.get(name) or "").strip()
    if len(raw) > MAX_TEXT:
        raise FilterError(f"{name} is longer than {MAX_TEXT} characters.")
    return raw or None


def _choice(args: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None):
    raw = (args.get(name) or "").strip()
    if not raw:
        return default
    if raw not in allowed:
        raise FilterError(f"{name} must be one of {', '.join(allowed)}.")
    return raw


def _ood(args: Mapping[str, str]) -> bool | None:
    raw = (args.get("ood") or "").strip()
    if not raw:
        return None
    if raw not in ("0", "1"):
        raise FilterError("ood must be 1 (only scans outside the model's experience) or 0 (only "
                          "scans measured and within it).")
    return raw == "1"
