"""``tumorlens export`` and ``neurons``: what a job found, as records and as neuron statistics."""

from __future__ import annotations

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
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
def export(job_id: int, fmt: str, output: Path | None) -> None:
    """Print one record per scan (per frame) of JOB as JSON or CSV."""
    from worker.export import export_job

    factory = open_store()
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        with db.session_scope(factory) as session:
            export_job(session, job_id, get_settings().output_dir, fmt, out)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if output:
            out.close()


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
