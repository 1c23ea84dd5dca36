"""The metric tables that ``evaluate`` and ``train`` print: classification, intervals, errors, localisation."""

from __future__ import annotations

from pathlib import Path


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def classification_table(title: str, metrics: dict):
    from rich.table import Table

    threshold = metrics.get("threshold", 0.5)
    table = Table(title=title if threshold == 0.5 else f"{title} (tumor when P >= {threshold:.4g})")
    for column in ("scans", "accuracy", "sensitivity", "specificity", "ROC AUC", "ECE", "TN FP / FN TP"):
        table.add_column(column, justify="right")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    table.add_row(str(metrics["n"]), _percent(metrics["accuracy"]), _percent(metrics["sensitivity"]),
                  _percent(metrics["specificity"]), _number(metrics["roc_auc"]),
                  _number(metrics["ece"]), f"{tn} {fp} / {fn} {tp}")
    return table


def intervals_line(metrics: dict) -> str:
    """Return the bootstrap intervals of a classification report as one line ("" without them)."""
    intervals = metrics.get("intervals")
    if not intervals:
        return ""

    def span(key: str, scale: float, digits: int) -> str:
        bounds = intervals[key]
        return "-" if bounds is None else "–".join(f"{scale * b:.{digits}f}" for b in bounds)

    return (f"{intervals['level']:.0%} CI (bootstrap over {intervals['clusters']} groups of "
            f"near-duplicates or cases): accuracy {span('accuracy', 100, 1)} %, sensitivity "
            f"{span('sensitivity', 100, 1)} %, specificity {span('specificity', 100, 1)} %, "
            f"ROC AUC {span('roc_auc', 1, 3)}")


def _errors_line(metrics: dict, shown: int = 5) -> str:
    """Return where a classification report's errors fall, by group, as one line ("" without any)."""
    errors = metrics.get("errors")
    if not errors or not errors["scans"]:
        return ""
    largest = "; ".join(
        f"{g['group']}: {g['wrong']} of {g['scans']} {g['label']} ("
        + ", ".join(Path(path).name for path in g["paths"][:3]) + (", …" if g["wrong"] > 3 else "") + ")"
        for g in errors["by_group"][:shown])
    return (f"errors: {errors['scans']} of {metrics['n']} scans, in {errors['groups']} of "
            f"{errors['of_groups']} groups of near-duplicates or cases; most: {largest}")


def _sizes_line(metrics: dict) -> str:
    """Return the sensitivity by tumor size as one line ("" without outlined tumor scans)."""
    bins = [b for b in metrics.get("sensitivity_by_size", []) if b["n"]]
    if not bins:
        return ""

    def span(b: dict) -> str:
        low = f"{100 * b['from']:g}"
        return f"≥ {low} %" if b["to"] is None else f"{low}–{100 * b['to']:g} %"

    return ("sensitivity by tumor size (share of the image, on outlined tumor scans): "
            + "; ".join(f"{span(b)}: {_percent(b['sensitivity'])} of {b['n']}" for b in bins))


def print_breakdown(console, metrics: dict) -> None:
    for line in (_errors_line(metrics), _sizes_line(metrics)):
        if line:
            console.print(line, markup=False)  # file names may hold brackets


def localisation_table(report: dict):
    from rich.table import Table

    table = Table(title="Localisation on annotated tumor scans")
    for column in ("method", "scans", "pointing game", "energy inside", "IoU@0.5"):
        table.add_column(column, justify="right" if column != "method" else "left")
    faithful = report.get("faithfulness", {})
    if faithful:
        table.add_column("deletion AUC ↓", justify="right")
        table.add_column("insertion AUC ↑", justify="right")
    for method, scores in report["localisation"].items():
        if not scores.get("n"):
            continue
        row = [method.replace("_", " "), str(scores["n"]), _percent(scores["pointing"]),
               _percent(scores["energy"]), _number(scores["iou"])]
        if faithful:
            curves = faithful.get(method, {})
            row += [_number(curves.get("deletion")), _number(curves.get("insertion"))]
        table.add_row(*row)
    return table


def review_line(report: dict) -> str:
    """Return the classification without the groups under label review as one line ("" if none)."""
    without = report.get("without_label_review")
    if not without:
        return ""
    excluded = without["excluded"]
    scans = sum(group["scans"] for group in excluded.values())
    why = "; ".join(f"{name}: {group['reason']}" for name, group in excluded.items())
    if not without["n"]:
        return f"without the {len(excluded)} group(s) under label review no scan is left ({why})"
    accuracy = without["intervals"]["accuracy"]
    span = "" if accuracy is None else " (" + "–".join(f"{100 * b:.1f}" for b in accuracy) + " %)"
    return (f"without the {len(excluded)} group(s) under label review ({scans} scans, labels kept as "
            f"they are): {without['n']} scans, accuracy {_percent(without['accuracy'])}{span}, "
            f"sensitivity {_percent(without['sensitivity'])}, specificity "
            f"{_percent(without['specificity'])}, ROC AUC {_number(without['roc_auc'])}. {why}")


def print_domain(console, title: str, report: dict, say_without_outlines: bool = False) -> None:
    """Print one evaluation: classification, intervals, label review, errors, localisation."""
    console.print(classification_table(title, report["classification"]))
    console.print(intervals_line(report["classification"]))
    if line := review_line(report):
        console.print(line, markup=False)
    print_breakdown(console, report["classification"])
    if any(s.get("n") for s in report["localisation"].values()):
        console.print(localisation_table(report))
    elif say_without_outlines:
        console.print("No tumor outlines found: localisation not measured "
                      "(give --annotations, or keep <name>_mask.png beside the scans).")


def print_report(report: dict) -> None:
    from rich.console import Console

    console = Console()
    print_domain(console, f"{report['model']}: classification", report, say_without_outlines=True)
    for skipped in report.get("skipped", []):
        console.print(f"not measured, unreadable: {skipped['path']}: {skipped['error']}")
