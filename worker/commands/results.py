"""``tumorlens export`` and ``neurons``: what a job found, as records and as neuron statistics."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from worker import db
from worker.commands.common import open_store
from worker.jobs import JobError
from worker.settings import get_settings
from worker.store import NotFound, get_job


@click.command()
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "series", "series-csv", "dicom"]),
              default="json", show_default=True,
              help="json/csv: one record per scan (per frame), with its DICOM series and slice_index. "
                   "series/series-csv: one record per DICOM series: its description, sequence, whether "
                   "it was analysed (else the reason), its tumor probability (top-k-mean: the mean "
                   "of its 3 strongest slices, slices outside the model's experience counted as 0), "
                   "strongest slice and tumor slice ranges (docs/design.md, worker.series). "
                   "dicom (needs --out DIR): per analysed DICOM series, a new series of Secondary "
                   "Capture overlays for a PACS. UNLIKE THE OTHERS, THIS EXPORT CARRIES PATIENT "
                   "IDENTIFIERS: the patient and study of the source files are copied into it.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --format dicom: the folder the DICOM files go to (they identify the patient).")
@click.option("--overlays", "overlay_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Draw the job's full-size overlays into this folder first (as `scan --overlays "
                   "eager` writes them); the records then point at them.")
@click.option("--processes", type=click.IntRange(1, 256),
              help="Processes drawing overlays or writing DICOM (default: one per core).")
def export(job_id: int, fmt: str, output: Path | None, out_dir: Path | None, overlay_dir: Path | None,
           processes: int | None) -> None:
    """Print one record per scan (per frame) of JOB, or per DICOM series, as JSON or CSV.

    --format dicom --out DIR writes DICOM overlays instead; only that export identifies patients.
    """
    from worker.export import export_job
    from worker.series_export import SERIES_FORMATS, export_series

    if (fmt == "dicom") != bool(out_dir):
        raise click.UsageError("--format dicom writes files that identify the patient: it needs --out DIR, "
                               "and --out is for --format dicom only")
    if fmt in (*SERIES_FORMATS, "dicom") and overlay_dir:
        raise click.UsageError("--overlays draws per-scan overlays: use it with --format json or csv")
    if fmt == "dicom" and output:
        raise click.UsageError("--format dicom writes into --out DIR; --output is for the record formats")
    factory = open_store()
    settings = get_settings()
    if fmt == "dicom":
        return write_dicom(factory, job_id, settings.output_dir, out_dir, processes)
    try:
        undrawn = draw_overlays(factory, job_id, overlay_dir, processes) if overlay_dir else set()
        out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            with db.session_scope(factory) as session:
                if fmt in SERIES_FORMATS:
                    export_series(session, job_id, fmt, out)
                else:
                    export_job(session, job_id, settings.output_dir, fmt, out, overlay_dir, frozenset(undrawn))
        finally:
            if output:
                out.close()
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc


def write_dicom(factory, job_id: int, output_dir, folder: Path, processes: int | None, shown: int = 20) -> None:
    """Write the job's DICOM overlays into ``folder``; print what was written and what skipped."""
    from worker.dicom_export import NotFinished, export_dicom

    try:
        with db.session_scope(factory) as session:
            done = export_dicom(session, job_id, output_dir, folder, processes)
    except (NotFound, NotFinished) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"job {job_id}: {done.series} series, {done.images} Secondary Capture images written "
               f"into {folder}; {len(done.skipped)} slices skipped")
    for path, frame, reason in done.skipped[:shown]:
        click.echo(f"  skipped {path}{'' if frame is None else f' frame {frame}'}: {reason}")
    if len(done.skipped) > shown:
        click.echo(f"  … and {len(done.skipped) - shown} more")


def draw_overlays(factory, job_id: int, folder: Path, processes: int | None, shown: int = 5) -> set[str]:
    """Draw the job's overlays into ``folder`` with a progress bar; say on stderr what was not drawn."""
    from worker.render import render_job
    from worker.store import scan_counts

    with db.session_scope(factory) as session:
        total = scan_counts(session, job_id)["done"]
        with _drawing_progress(total) as advance:
            drawn = render_job(session, job_id, get_settings().output_dir, folder, processes, advance)
    click.echo(f"job {job_id}: {drawn.written} overlays drawn into {folder}", err=True)
    if drawn.problems:
        click.echo(f"{len(drawn.problems)} scans could not be drawn (their records say overlay null):",
                   err=True)
        for path, reason in drawn.problems[:shown]:
            click.echo(f"  {path}: {reason}", err=True)
    return drawn.undrawn


@contextlib.contextmanager
def _drawing_progress(total: int):
    if not sys.stderr.isatty():
        yield lambda scans: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("drawing overlays", total=total)
        yield lambda scans: progress.advance(task, scans)


@click.command()
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def neurons(job_id: int, top: int, as_json: bool) -> None:
    """Show the neurons of JOB's target layer most correlated with the class label."""
    from worker.export import neuron_report

    factory = open_store()
    try:
        with db.session_scope(factory) as session:
            report = neuron_report(session, get_job(session, job_id), top)
    except (NotFound, JobError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report))
    else:
        print_neurons(report)


def print_neurons(report: dict) -> None:
    """Print the neuron report as sentences and a table per sign."""
    click.echo(f"job {report['job']}: {report['n_neurons']} neurons of {report['model']}'s target "
               f"layer over {report['n_scans']} scans; labels from {report['label_source']}")
    if report["note"]:
        click.echo(report["note"])
    for sign in ("top_positive", "top_negative"):
        if report[sign]:
            click.echo(f"{sign.replace('_', ' ')}:")
        for row in report[sign]:
            means = ", ".join(f"{name} {value:.4g}" for name, value in row["mean_activation"].items()
                              if value is not None)
            click.echo(f"  neuron {row['neuron']:>5}  r = {row['correlation']:+.3f}  mean: {means}")


COMMANDS = [export, neurons]
