"""``tumorlens check-model`` and ``init-model``: look at a model before a long run, draft its model.json.

TensorFlow loads inside the commands, so ``tumorlens --help`` stays fast.

``check-model --json`` prints one object::

    {"model": NAME, "usable": true, "method": "gradcam",
     "spec": {the model.json fields..., "model_path": ABSOLUTE PATH},
     "graph": {"target": "base/base_conv2", "map_size": [h, w, channels], "input_hw": [h, w],
               "shrink": [in height, in width], "resolution": "32x32 -> 16x16, 2x smaller",
               "head": [layer names], "head_kind": "GAP -> Dense",
               "methods": {"cam": {"applies": true, "why_not": null}, ...}},
     "warnings": [sentences],
     "scan": null or {"path", "frame", "frames", "width", "height", "predicted_class",
                      "tumor_probability", "probabilities": {class: p},
                      "peak": [x, y] in the scan's pixels, or null for an all-zero map},
     "throughput": {"batch_size", "calls", "seconds", "scans_per_second", "ms_per_scan"}}

and, for a model that cannot be used, ``{"model": NAME, "usable": false, "error": SENTENCE}``
(exit code 1 either way the model fails).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import click

from pipeline.explain.analysis import METHODS
from worker.commands.common import user_errors

PREPROCESSING_WORDS = {"unit": "x/255", "symmetric": "x/127.5 - 1", "caffe": "BGR minus ImageNet means",
                       "torch": "x/255, ImageNet mean and std", "none": "the model does its own"}
LABEL_WIDTH = 16


@click.command("check-model")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--scan", "scan_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A scan to classify and explain with the model.")
@click.option("--method", type=click.Choice(METHODS), default="gradcam", show_default=True,
              help="CAM method to prepare, time and show the scan's peak with.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
def check_model_command(model: Path, scan_path: Path | None, method: str, as_json: bool) -> None:
    """Show how tumorlens understands MODEL (a model.json or its folder), before a long run.

    Prints the spec, the target layer and its maps, the head and the CAM methods it allows,
    warnings about the declared output, the prediction on --scan and the speed on this machine.
    """
    from pipeline.explain.analysis import Analyzer
    from pipeline.model.loading import ModelError
    from pipeline.model.spec import SpecError, load_spec

    try:
        spec = load_spec(model)
    except SpecError as exc:
        _fail(str(model), str(exc), as_json)
    analyzer = Analyzer(spec, method)
    try:
        graph = analyzer.ready()
    except ModelError as exc:
        _fail(spec.name, str(exc), as_json)
    try:
        facts = _facts(spec, analyzer, graph, scan_path)
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        _print_facts(facts)


@click.command("init-model")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for model.json (default: the model file's folder).")
@click.option("--name", help="Model name (default: the file's name, or its folder's for model.keras).")
@click.option("--input-size", nargs=2, type=click.IntRange(1), metavar="WIDTH HEIGHT",
              help="Input size the model was trained on, for a model that accepts any size.")
@click.option("--force", is_flag=True, help="Replace an existing model.json.")
def init_model_command(file: Path, out: Path | None, name: str | None,
                       input_size: tuple[int, int] | None, force: bool) -> None:
    """Write a draft model.json for FILE (.keras or .h5), inferred from the model itself.

    Input size, colour mode, output kind and preprocessing come from the model; the class names
    are placeholders to edit. Check the result with: tumorlens check-model FOLDER --scan SCAN.
    """
    folder = out or file.parent
    if (folder / "model.json").exists() and not force:
        raise click.ClickException(f"{folder / 'model.json'} already exists; give --force to replace it")
    from pipeline.model.draft import draft_spec, read_model_file
    from pipeline.model.spec import load_spec, write_spec

    name = name or (file.stem if file.stem != "model" else file.resolve().parent.name)
    try:
        draft = draft_spec(read_model_file(file), file, name, folder, input_size or None)
        folder.mkdir(parents=True, exist_ok=True)
        path = write_spec(draft.fields, folder)
        load_spec(path)
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    _print_draft(draft, path)


def _fail(name: str, message: str, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"model": name, "usable": False, "error": message}, indent=2))
    raise click.ClickException(f"{name} cannot be used: {message}")


def _facts(spec, analyzer, graph, scan_path: Path | None) -> dict:
    from pipeline.model.inspect import describe_graph, output_warnings, throughput

    # The CAM graph's scores are pre-softmax: the output check needs the model's own output,
    # the very model ready() loaded.
    return {"model": spec.name, "usable": True, "method": analyzer.method,
            "spec": {**spec.to_json(), "model_path": str(spec.model_path)},
            "graph": describe_graph(graph, spec).to_json(),
            "warnings": output_warnings(analyzer.model, spec),
            "scan": _scan_facts(analyzer, scan_path) if scan_path else None,
            "throughput": throughput(analyzer).to_json()}


def _scan_facts(analyzer, path: Path) -> dict:
    """Classify the scan's first frame and find its map's peak in the scan's own pixels (None if flat)."""
    from pipeline.io.heatmaps import peak, upsample
    from pipeline.io.scans import ScanError, read_scan

    try:
        scans = read_scan(path)
    except ScanError as exc:  # its message says what is wrong, not with which file
        raise ScanError(f"cannot read the scan {path}: {exc}") from None
    pixels = scans[0].pixels
    result = analyzer.analyze(analyzer.prepare(pixels)[None])
    height, width = pixels.shape[:2]
    chosen, cam = int(result.predicted[0]), result.cams[0]
    return {"path": str(path), "frame": scans[0].frame, "frames": len(scans), "width": width,
            "height": height, "predicted_class": result.class_names[chosen],
            "tumor_probability": round(float(result.tumor_probability[0]), 4),
            "probabilities": {name: round(float(p), 4)
                              for name, p in zip(result.class_names, result.probabilities[0])},
            "peak": list(peak(upsample(cam, (width, height)))) if cam.max() > 0 else None}


def _line(label: str, value: str) -> None:
    click.echo(f"{label:<{LABEL_WIDTH}}{value}")


def _print_facts(facts: dict) -> None:
    spec, graph = facts["spec"], facts["graph"]
    width, height = spec["input_size"]
    _line("model", f"{facts['model']} ({spec['model_path']})")
    _line("input", f"{width} wide x {height} high, {spec['color_mode']}, preprocessing "
                   f"{spec['preprocessing']} ({PREPROCESSING_WORDS[spec['preprocessing']]})")
    _line("classes", f"{', '.join(spec['class_names'])}; tumor: {', '.join(spec['positive_classes'])}")
    _line("output", spec["output"])
    _line("target setting", "null (automatic: the last spatial map)" if spec["target_layer"] is None
          else spec["target_layer"])
    map_h, map_w, channels = graph["map_size"]
    _line("target layer", graph["target"])
    _line("feature map", f"{map_h}x{map_w}x{channels} (height x width x channels)")
    _line("resolution", graph["resolution"])
    _line("head", graph["head_kind"])
    methods = graph["methods"]
    _line("CAM methods", ", ".join(name for name, m in methods.items() if m["applies"]))
    for name, m in methods.items():
        if not m["applies"]:
            _line("", f"not {name}: it {m['why_not']}")
    for warning in facts["warnings"]:
        _line("WARNING", warning)
    if facts["scan"]:
        _print_scan(facts["scan"], facts["method"])
    speed = facts["throughput"]
    _line("throughput", f"{speed['scans_per_second']:.1f} scans/s, {speed['ms_per_scan']:.1f} ms per "
                        f"scan ({facts['method']}, batches of {speed['batch_size']}, this machine)")


def _print_scan(scan: dict, method: str) -> None:
    frame = f", frame 1 of {scan['frames']}" if scan["frames"] > 1 else ""
    _line("scan", f"{scan['path']} ({scan['width']} wide, {scan['height']} high{frame})")
    _line("predicted", f"{scan['predicted_class']}, tumor probability {scan['tumor_probability']:.3f}")
    if scan["peak"] is None:  # an all-zero map has no place to point at; (0, 0) would mislead
        _line(f"{method} peak", "none: the map is zero everywhere (nothing in it raised this class)")
    else:
        _line(f"{method} peak", f"x={scan['peak'][0]}, y={scan['peak'][1]} in the scan's pixels")


def _print_draft(draft, path: Path) -> None:
    click.echo(f"wrote {path} for {draft.fields['file']}, named {json.dumps(draft.fields['name'])}:")
    for key, value in draft.fields.items():
        if key in draft.reasons:
            click.echo(f"  {key:<17}{json.dumps(value):<24} {draft.reasons[key]}")
    click.echo("Check and edit before use:")
    for check in _draft_checks(draft.fields):
        click.echo(f"  - {check}")
    click.echo(f"Then: tumorlens check-model {path.parent} --scan A_SCAN")


def _draft_checks(fields: dict) -> list[str]:
    """Return what only the model's author knows: class order, tumor classes, the preprocessing."""
    checks = [f"class_names {json.dumps(fields['class_names'])} are placeholders: write the model's "
              "classes in the order of its output units",
              f"positive_classes {json.dumps(fields['positive_classes'])}: list the classes that mean tumor"]
    if fields["preprocessing"] == "unit":
        checks.append('preprocessing "unit" (x/255) is a guess: set the one the model was trained with '
                      '("symmetric" for Xception, Inception or MobileNet, "caffe" for VGG or ResNet50, '
                      '"torch", or "none")')
    return checks


@click.command("fit-distribution")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("data", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
def fit_distribution_command(model: Path, data: tuple[Path, ...]) -> None:
    """Fit MODEL's training distribution on DATA's TRAIN scans (its limit on VALIDATION).

    DATA are the prepared folders the model was trained on. The statistics are written beside
    the model as in_distribution.npz and named in model.json: from then on every scan gets an
    ood_score, and one above 1 is recorded as outside the model's experience.
    """
    from pipeline.model.spec import load_spec
    from pipeline.train.card import record_in_card
    from pipeline.train.familiarity import fit_model_distribution

    try:
        spec, record = fit_model_distribution(load_spec(model), data)
    except (*user_errors(), ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    record_in_card(spec.folder, "in_distribution", record)
    click.echo(f"{spec.name}: fitted on {record['train_scans']} TRAIN scans; the limit keeps "
               f"{record['validation_inside']:.1%} of {record['validation_scans']} VALIDATION scans "
               f"inside; wrote {spec.distribution_path} and {spec.folder / 'model.json'}")


COMMANDS = [check_model_command, init_model_command, fit_distribution_command]
