"""``tumorlens prepare-data`` and ``split-cases``: labelled folders -> leak-free splits."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

DEFAULT_MAX_DISTANCE = 20  # pipeline.data.near_duplicates.MAX_DISTANCE, kept here so --help stays fast


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a (done, total) callback drawing a bar on a terminal, or None when quiet."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("Hashing images", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _review_lines(summary: dict) -> list[str]:
    return [f"label review: {g['group']} ({g['split']}) reported both ways: {g['reason']}"
            for g in summary.get("label_review", [])]


def _report(summary: dict) -> list[str]:
    """Return the summary as lines for a person."""
    lines = [f"{summary['images']} images ({summary['classes']['yes']} yes, "
             f"{summary['classes']['no']} no); {summary['exact_duplicates']} exact duplicates; "
             f"{summary['near_duplicate_groups']} near-duplicate groups; {summary['groups']} groups "
             f"in all, the largest of {summary['largest_group']}"]
    for name, split in summary["splits"].items():
        share = "-" if split["yes_share"] is None else f"{split['yes_share']:.1%}"
        lines.append(f"  {name:<10} {split['images']:>6} images  {split['yes']:>6} yes "
                     f"{split['no']:>6} no  ({share} yes)")
    lines += [f"conflict: identical image under YES and NO: {', '.join(c['paths'])}"
              for c in summary["conflicts"]]
    lines += [f"near-duplicates under YES and NO (kept together in {g['split']}): "
              f"{', '.join(g['paths'])}" for g in summary["mixed_groups"]]
    lines += [f"left out: {e['path']} ({e['reason']}, {e['files']} file(s))" for e in summary["left_out"]]
    lines += [f"unreadable, left out: {u['path']}: {u['error']}" for u in summary["unreadable"]]
    lines.append(f"{summary['linked']} files linked, {summary['copied']} copied")
    return lines + _review_lines(summary)


@click.command("prepare-data")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--split", "split_text", default="70,20,10", show_default=True,
              help="TRAIN,VALIDATION,TEST percentages (non-negative, summing to 100).")
@click.option("--seed", default=0, show_default=True, help="The same seed gives the same split.")
@click.option("--max-distance", type=click.IntRange(0, 256), default=DEFAULT_MAX_DISTANCE,
              show_default=True, help="Near-duplicate limit in bits of the 256-bit image hash.")
@click.option("--force", is_flag=True, help="Replace an earlier preparation in DEST.")
@click.option("--label-review", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A list of scans whose label is in doubt (e.g. docs/label_review/br35h.json): "
                   "kept with the split, so evaluate reports metrics with and without them.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def prepare_data(src: Path, dest: Path, split_text: str, seed: int, max_distance: int,
                 force: bool, label_review: Path | None, as_json: bool) -> None:
    """Split SRC's YES and NO images into DEST's TRAIN, VALIDATION and TEST folders.

    Exact and near-duplicate images (other contrast, crop, size, mirror image) are grouped and
    each group goes to one split, stratified by class. DEST gets yes/ and no/ per split (hard
    links where possible), manifest.csv and summary.json. PRED and other folders are left out.
    """
    from pipeline.data import prepare
    from pipeline.data.label_review import LabelReviewError, place_review

    try:
        proportions = prepare.parse_split(split_text)
        with _progress_bar(sys.stderr.isatty() and not as_json) as progress:
            summary = prepare.prepare_data(src, dest, proportions, seed=seed, force=force,
                                           max_distance=max_distance, progress=progress)
        if label_review:
            review = place_review(label_review, dest)
            summary["label_review"] = [{k: g[k] for k in ("group", "split", "reason")}
                                       for g in review["groups"]]
    except (prepare.PrepareError, LabelReviewError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2) if as_json else "\n".join(_report(summary)))



@click.command("split-cases")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", "split_text", default="60,20,20", show_default=True,
              help="TRAIN,VALIDATION,TEST shares of the cases (patients).")
@click.option("--seed", type=int, default=0, show_default=True)
def split_cases(src: Path, dest: Path, split_text: str, seed: int) -> None:
    """Split SRC/{tumor,no_tumor}/<case>/ by case (patient) into DEST/{TRAIN,VALIDATION,TEST}.

    Every slice of a patient lands in one split; masks travel with their slice; DEST gets
    symlinks and manifest.csv.
    """
    from pipeline.data.datasets import DataError, split_by_case

    try:
        fractions = [float(part) for part in split_text.split(",")]
        if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter("expected three non-negative numbers such as 60,20,20",
                                 param_hint="--split") from None
    try:
        counts = split_by_case(src, dest, fractions, seed)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("  ".join(f"{name} {count} slices" for name, count in counts.items()))


COMMANDS = [prepare_data, split_cases]
