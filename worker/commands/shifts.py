"""``tumorlens evaluate --shift``: one table of a model under controlled shifts of its test set."""

from __future__ import annotations

from pathlib import Path

import click

from worker.commands.common import emit, load_annotations, user_errors

# How each family's severity reads in the table (see pipeline.evaluate.shifts.SHIFTS for units).
SEVERITY_LABELS = {
    "resolution": "{:g} px", "padding": "+{:.0%}", "crop": "keep {:.0%}", "off-centre": "{:.0%}",
    "gamma": "γ {:g}", "contrast": "×{:g}", "bias-field": "±{:g}", "inversion": "{:.0%}",
    "noise": "σ {:g}", "blur": "σ {:g} px", "jpeg": "q {:g}",
}
PIPE_WIDTH = 110  # the table's natural width


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def parse_shifts(text: str) -> tuple[str, ...]:
    """Return the families named by ``all`` or a comma list, or refuse an unknown name in words."""
    from pipeline.evaluate.shifts import SHIFTS

    if text.strip() == "all":
        return tuple(SHIFTS)
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SHIFTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown shift {', '.join(unknown) or repr(text)}: give 'all' or "
                                 f"a comma list of {', '.join(SHIFTS)}", param_hint="--shift")
    return names


def _severity(row: dict) -> str:
    if row["severity"] is None:
        return "-"
    label = SEVERITY_LABELS.get(row["shift"], "{:g}").format(row["severity"])
    return f"{label} *" if row["moderate"] else label


def _delta(row: dict, bar: float) -> str:
    if row["shift"] == "none":
        return "-"
    text = f"{100 * row['delta_accuracy']:+.1f}"
    over = row["moderate"] and -row["delta_accuracy"] > bar + 1e-9
    return f"[bold red]{text}[/]" if over else text


def shift_rows_table(table: dict):
    """Return the shift table as a rich Table: one row per shift and severity, unshifted first."""
    from rich.table import Table

    title = (f"{table['model']}: controlled shifts of {table['scans']} scans "
             f"(pointing game: {table['method']})")
    caption = ("* the moderate severity; Δ accuracy in points against none; the pointing game "
               "over the outlined tumor scans still in the image")
    rich_table = Table(title=title, caption=caption)
    for column in ("shift", "severity", "accuracy", "Δ accuracy", "sensitivity", "specificity",
                   "pointing game", "outlined"):
        rich_table.add_column(column, justify="left" if column in ("shift", "severity") else "right")
    for row in table["rows"]:
        rich_table.add_row(row["shift"], _severity(row), _percent(row["accuracy"]),
                           _delta(row, table["bar"]), _percent(row["sensitivity"]),
                           _percent(row["specificity"]), _percent(row["pointing"]),
                           str(row["localised"]))
    return rich_table


def bar_line(table: dict) -> str:
    """Return which moderate shifts cost more than the bar of accuracy, as one line."""
    bar = f"{100 * table['bar']:g} points"
    if not table["over_bar"]:
        return f"no moderate shift costs more than {bar} of accuracy"
    costly = ", ".join(f"{r['shift']} {_severity(r).removesuffix(' *')} "
                       f"({100 * r['delta_accuracy']:+.1f})" for r in table["over_bar"])
    return f"moderate shifts costing more than {bar} of accuracy: {costly}"


def print_shift_table(table: dict) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a pipe or a file: whole column names rather than 80 columns
        console.width = max(console.width, PIPE_WIDTH)
    console.print(shift_rows_table(table))
    console.print(bar_line(table))
    if table["skipped"]:
        console.print(f"not measured, unreadable: {table['skipped']} scan(s)")


def run_shifts(model: Path, data: Path, annotations: Path | None, shift: str, method: str,
               limit: int | None, batch_size: int, as_json: bool) -> None:
    """Measure MODEL on DATA's test scans under the named shifts and print the table."""
    from pipeline.evaluate.evaluation import evaluation_set
    from pipeline.evaluate.shifts import shift_table
    from pipeline.model.spec import load_spec

    if method == "all":
        raise click.UsageError("--shift scores one CAM method: give --method gradcam (or another)")
    shifts = parse_shifts(shift)
    try:
        outlines = load_annotations(annotations)
        table = shift_table(load_spec(model), evaluation_set(data, outlines), outlines,
                            shifts, method=method, batch_size=batch_size, limit=limit)
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    emit(table, data, as_json, print_shift_table)
