"""``tumorlens scan``, ``resume`` and ``cancel``: jobs from the terminal.

Without a broker (``TUMORLENS_BROKER_URL`` unset) or with ``--local`` a job runs in this process;
otherwise it is queued to the Celery workers. Ctrl-C during a local run keeps what was committed
and exits 130; ``tumorlens resume JOB`` finishes the job.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from pipeline.explain.analysis import METHODS
from worker import db
from worker.commands.common import open_store
from worker.jobs import JobError, cancel_job, create_job, job_summary, reopen_job
from worker.models import OVERLAY_MODES, OVERLAYS_ON_DEMAND
from worker.settings import DEFAULT_MODEL, get_settings
from worker.store import NotFound, get_job

INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
TERMINAL = ("done", "cancelled", "failed")


@contextlib.contextmanager
def job_progress(job_id: int) -> Iterator[Callable[[int, int], None]]:
    """Yield a (finished, total) callback that draws a bar with rate and ETA on a terminal."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        yield lambda finished, total: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn(f"job {job_id}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("scans", total=None, rate="")

        def update(finished: int, total: int) -> None:
            progress.update(task, completed=finished, total=total)
            speed = progress.tasks[0].speed
            progress.update(task, rate=f"{speed:.1f} scans/s" if speed else "")

        yield update


def load_model_spec(model: Path | None):
    """Return the spec of ``model`` (a model.json or its folder), or of the configured default."""
    from pipeline.model.spec import SpecError, load_spec

    settings = get_settings()
    path = model or settings.model
    if model is None and settings.model == DEFAULT_MODEL and not (DEFAULT_MODEL / "model.json").is_file():
        path = demo_model(settings.home / "demo-model")
    try:
        return load_spec(path)
    except SpecError as exc:
        raise click.ClickException(f"invalid model: {exc}") from exc


def demo_model(folder: Path) -> Path:
    """Build (once) the random-weight demo model and say on stderr what it is."""
    from pipeline.model.demo import ensure_demo_model

    path = ensure_demo_model(folder)
    click.echo(f"no trained model in {DEFAULT_MODEL}: using a demo model with random weights "
               f"({path.parent}); its predictions mean nothing", err=True)
    return path


def run_here(factory, job_id: int, batch_size: int | None) -> dict:
    """Run the job in this process with a progress bar; exit 130 on Ctrl-C."""
    from worker.local import run_local

    try:
        with job_progress(job_id) as progress:
            return run_local(factory, job_id, batch_size=batch_size, on_progress=progress)
    except KeyboardInterrupt:
        click.echo(f'interrupted: run "tumorlens resume {job_id}" to finish', err=True)
        sys.exit(INTERRUPTED)


def wait_for(factory, job_id: int, poll: float = 1.0) -> dict:
    """Follow a queued job until it ends; return its summary."""
    with job_progress(job_id) as progress:
        while True:
            with db.session_scope(factory) as session:
                summary = job_summary(session, job_id)
            progress(summary["done"] + summary["failed"] + summary["duplicate"] + summary["skipped"],
                     summary["scans"])
            if summary["status"] in TERMINAL:
                return summary
            time.sleep(poll)


def queue_job(factory, job_id: int, resume: bool = False) -> None:
    """Hand the job to the Celery workers, or exit with what is missing."""
    try:
        from worker import queue
    except ModuleNotFoundError as exc:
        raise click.ClickException("queued jobs need worker.queue, which this installation lacks; "
                                   "run the scan with --local") from exc
    try:
        if resume:
            queue.resume_job(job_id, factory)
        else:
            queue.enqueue_job(job_id)
    except queue.QueueError as exc:
        raise click.ClickException(f"{exc}. Job {job_id} is recorded: `tumorlens resume {job_id}` "
                                   "queues it once the broker is up") from exc


def print_summary(summary: dict, as_json: bool, factory=None) -> None:
    """Print the job's summary as ARCHITECTURE's JSON or as sentences."""
    if as_json:
        click.echo(json.dumps(summary))
        return
    skipped = f", {summary['skipped']} skipped (their series is not to be analysed)" if summary.get("skipped") else ""
    click.echo(f"job {summary['job']} {summary['status']}: {summary['scans']} scans, "
               f"{summary['done']} done, {summary['failed']} failed, {summary['duplicate']} "
               f"duplicate{skipped}, in {summary['seconds']:.1f} s")
    if summary["failed"] and factory is not None:
        _print_failures(factory, summary["job"])
    if summary["status"] == "done":
        click.echo(f"records: tumorlens export {summary['job']} --format csv")
        if summary.get("series"):
            click.echo(f"{summary['series']} DICOM series: tumorlens export {summary['job']} --format series")


def exit_if_failed(factory, summary: dict) -> None:
    """End with the job's reason and exit code 1 when the job itself failed."""
    if summary["status"] == "failed":
        with db.session_scope(factory) as session:
            reason = get_job(session, summary["job"]).error
        raise click.ClickException(f"job {summary['job']} failed: {reason}")


def _print_failures(factory, job_id: int, shown: int = 5) -> None:
    from sqlalchemy import select

    from worker.models import Scan, ScanStatus

    query = (select(Scan.path, Scan.error).where(Scan.job_id == job_id, Scan.status == ScanStatus.FAILED)
             .order_by(Scan.id).limit(shown))
    with db.session_scope(factory) as session:
        for path, error in session.execute(query):
            click.echo(f"  failed: {path}: {error}")


def finish(factory, job_id: int, local: bool, wait: bool, batch_size: int | None) -> dict:
    """Run the job here or follow the queue; return the summary to print."""
    if local:
        return run_here(factory, job_id, batch_size)
    if wait:
        return wait_for(factory, job_id)
    with db.session_scope(factory) as session:
        return job_summary(session, job_id)


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), help="model.json or its folder.")
@click.option("--method", type=click.Choice(METHODS), default="gradcam", show_default=True,
              help="Class activation map method.")
@click.option("--local", is_flag=True, help="Run in this process (implied without a broker).")
@click.option("--wait", is_flag=True, help="With a broker: follow the job until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--batch-size", type=click.IntRange(1, 4096),
              help="Scans per batch of an in-process run (default: TUMORLENS_BATCH_SIZE).")
@click.option("--overlays", type=click.Choice(OVERLAY_MODES), default=OVERLAYS_ON_DEMAND,
              show_default=True,
              help="Full-size overlays: rendered when viewed or exported (export --overlays), or "
                   "written now beside the thumbnails (about 10x the disk).")
@click.option("--all-series", is_flag=True,
              help="Analyse every DICOM series. By default a series that is not MR, is a localizer, "
                   "shows another body part (BodyPartExamined) is skipped, its scans recorded "
                   "'skipped' with the reason; too few slices (< 5) or images mostly outside the "
                   "model's experience leave a series without a series result.")
def scan(folder: Path, model: Path | None, method: str, local: bool, wait: bool, as_json: bool,
         batch_size: int | None, overlays: str, all_series: bool) -> None:
    """Analyse every scan under FOLDER."""
    if not folder.is_dir():
        raise click.ClickException(f"no such folder: {folder}")
    spec = load_model_spec(model)
    factory = open_store()
    with db.session_scope(factory) as session:
        try:
            job_id = create_job(session, folder, spec, method, overlays=overlays, all_series=all_series).id
        except JobError as exc:
            raise click.ClickException(str(exc)) from exc
    local = local or not get_settings().broker_url
    if not local:
        queue_job(factory, job_id)
        if not as_json:
            click.echo(f"job {job_id} queued", err=True)
    summary = finish(factory, job_id, local, wait, batch_size)
    print_summary(summary, as_json, factory)
    exit_if_failed(factory, summary)


@click.command()
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--local", is_flag=True, help="Finish it in this process (implied without a broker).")
@click.option("--wait", is_flag=True, help="With a broker: follow the job until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--batch-size", type=click.IntRange(1, 4096),
              help="Scans per batch of an in-process run (default: TUMORLENS_BATCH_SIZE).")
def resume(job_id: int, local: bool, wait: bool, as_json: bool, batch_size: int | None) -> None:
    """Finish an interrupted, cancelled or failed job: only what is not done is analysed."""
    factory = open_store()
    try:
        with db.session_scope(factory) as session:
            reopen_job(session, job_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    local = local or not get_settings().broker_url
    if not local:
        queue_job(factory, job_id, resume=True)
    summary = finish(factory, job_id, local, wait, batch_size)
    print_summary(summary, as_json, factory)
    exit_if_failed(factory, summary)


@click.command()
@click.argument("job_id", metavar="JOB", type=int)
def cancel(job_id: int) -> None:
    """Stop a job: no new batch starts; what is done stays done (resume continues it)."""
    factory = open_store()
    try:
        with db.session_scope(factory) as session:
            cancel_job(session, job_id)
    except (NotFound, JobError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"job {job_id} cancelled")


COMMANDS = [scan, resume, cancel]
