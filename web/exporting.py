"""Stream a job's export (``worker.export`` records) as CSV or JSON, a chunk at a time."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from worker.export import csv_columns, flatten

CHUNK_ROWS = 200
MIMETYPES = {"csv": "text/csv", "json": "application/json"}


def csv_chunks(rows: Iterable[dict], class_names: list[str]) -> Iterator[str]:
    """Yield the CSV of ``rows`` (same columns as ``tumorlens export --format csv``) in chunks."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(class_names), lineterminator="\n")
    writer.writeheader()
    for count, row in enumerate(rows, 1):
        writer.writerow(flatten(row, class_names))
        if count % CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_chunks(rows: Iterable[dict]) -> Iterator[str]:
    """Yield the JSON array of ``rows`` exactly as ``tumorlens export --format json`` writes it."""
    count = 0
    yield "["
    for row in rows:
        yield ("," if count else "") + "\n" + json.dumps(row, ensure_ascii=False)
        count += 1
    yield "\n]\n" if count else "]\n"
