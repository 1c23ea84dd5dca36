"""``tumorlens evaluate`` from the command line, and the shipped default model on the samples."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.explain.analysis import METHODS, Analyzer
from pipeline.io.scans import read_scan
from pipeline.model.spec import load_spec
from tests.pipeline.mldata import blob_image, bright_spot_model, write_cases
from worker.cli import main

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MODEL = ROOT / "models" / "default"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return bright_spot_model(tmp_path_factory.mktemp("model"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_evaluate_json_has_every_number_in_range(model, prepared):
    result = run("evaluate", model, prepared, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    classification = report["classification"]
    assert {"accuracy", "sensitivity", "specificity", "roc_auc", "confusion_matrix", "ece", "n"} <= set(classification)
    assert classification["n"] == 10  # the TEST split: five of each class
    intervals = classification["intervals"]
    assert intervals["level"] == 0.95 and intervals["clusters"] == 10
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        low, high = intervals[key]
        assert 0.0 <= low <= classification[key] <= high <= 1.0
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc", "ece"):
        assert 0.0 <= classification[key] <= 1.0
    localisation = report["localisation"]
    assert set(localisation) == {"gradcam", "centre_baseline"}
    assert localisation["gradcam"]["n"] == 5 and 0.0 <= localisation["gradcam"]["pointing"] <= 1.0
    assert report["neurons"]["n_neurons"] == 1
    assert report["data"] == str(prepared)


def test_evaluate_all_methods_prints_one_comparison_table(model, prepared):
    result = run("evaluate", model, prepared / "TEST", "--method", "all", "--limit", "6")
    assert result.exit_code == 0, result.output
    for method in (*METHODS, "centre baseline", "pointing game", "accuracy"):
        assert method in result.output
    assert "95% CI (bootstrap over 6 groups" in " ".join(result.output.split())
    as_json = json.loads(run("evaluate", model, prepared / "TEST", "--method", "all", "--limit", "6",
                             "--json").output)
    assert set(as_json["localisation"]) == {*METHODS, "centre_baseline"}
    assert as_json["classification"]["n"] == 6


def test_evaluate_reads_the_lgg_layout_with_case_folders(model, tmp_path):
    rng = np.random.default_rng(2)
    for label, folder in (("yes", "tumor"), ("no", "no_tumor")):
        case = tmp_path / folder / "TCGA_XX_0001"
        case.mkdir(parents=True)
        for i in range(3):
            image, mask = blob_image(rng, label == "yes")
            Image.fromarray(image).save(case / f"TCGA_XX_0001_{i}.jpg")
            if mask.any():
                Image.fromarray(mask.astype(np.uint8) * 255).save(case / f"TCGA_XX_0001_{i}_mask.png")
    report = json.loads(run("evaluate", model, tmp_path, "--json").output)
    assert report["classification"]["n"] == 6  # masks are not counted as scans
    assert report["localisation"]["gradcam"]["n"] == 3
    by_size = [b for b in report["classification"]["sensitivity_by_size"] if b["n"]]
    assert sum(b["n"] for b in by_size) == 3 and all(b["sensitivity"] == 1.0 for b in by_size)
    printed = " ".join(run("evaluate", model, tmp_path).output.split())
    assert "sensitivity by tumor size (share of the image, on outlined tumor scans):" in printed
    assert "100.0% of" in printed


def test_evaluate_says_which_groups_hold_the_errors(model, tmp_path):
    rng = np.random.default_rng(4)
    # case B's "no tumor" slices show the bright spot the model calls tumor: two errors, one case
    for folder, case, spots in (("tumor", "A", (True, True)), ("no_tumor", "B", (True, True, False)),
                                ("no_tumor", "C", (False,))):
        (tmp_path / folder / case).mkdir(parents=True)
        for i, spot in enumerate(spots):
            Image.fromarray(blob_image(rng, spot)[0]).save(tmp_path / folder / case / f"{case}[{i}].jpg")
    report = json.loads(run("evaluate", model, tmp_path, "--json").output)
    errors = report["classification"]["errors"]
    assert (errors["scans"], errors["groups"], errors["of_groups"]) == (2, 1, 3)
    assert errors["by_group"][0]["label"] == "no tumor"
    assert sorted(Path(p).name for p in errors["by_group"][0]["paths"]) == ["B[0].jpg", "B[1].jpg"]
    printed = " ".join(run("evaluate", model, tmp_path).output.split())
    assert "errors: 2 of 6 scans, in 1 of 3 groups of near-duplicates or cases" in printed
    assert "most: B: 2 of 3 no tumor (B[0].jpg, B[1].jpg)" in printed  # brackets printed, not read as markup


def test_evaluate_explains_a_folder_without_classes(model, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(model), str(tmp_path)])
    assert result.exit_code != 0
    assert "no class folders" in result.output


def test_evaluate_explains_a_folder_without_a_model(prepared, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(prepared)])
    assert result.exit_code != 0
    assert "model.json" in result.output


@pytest.mark.skipif(not (DEFAULT_MODEL / "model.json").is_file(), reason="no shipped default model")
def test_the_default_model_recognises_the_samples():
    spec = load_spec(DEFAULT_MODEL)
    card = json.loads((DEFAULT_MODEL / "model_card.json").read_text())
    assert card["cam_method"] in METHODS
    analyzer = Analyzer(spec, card["cam_method"])
    paths = sorted((ROOT / "samples" / "yes").glob("*.jpg")) + sorted((ROOT / "samples" / "no").glob("*.jpg"))
    assert len(paths) >= 4
    batch = np.stack([analyzer.prepare(read_scan(p)[0].pixels) for p in paths])
    result = analyzer.analyze(batch)
    expected = [1 if p.parent.name == "yes" else 0 for p in paths]
    assert (result.tumor_probability >= 0.5).astype(int).tolist() == expected
    assert result.cams.shape[1:] == (spec.input_size[1] // 8, spec.input_size[0] // 8)  # lens's map


def test_evaluate_reports_a_split_both_with_and_without_its_label_review(model, tmp_path):
    write_cases(tmp_path)
    (tmp_path / "label_review.json").write_text(json.dumps({"format": 1, "groups": [
        {"group": "B", "reason": "bright spots in no-tumor slices", "scans": [{"path": "x", "sha256": "y"}]}]}))
    report = json.loads(run("evaluate", model, tmp_path, "--json").output)
    assert report["classification"]["specificity"] == 0.5  # every label counted as it is
    assert report["without_label_review"]["specificity"] == 1.0
    printed = " ".join(run("evaluate", model, tmp_path).output.split())
    assert "without the 1 group(s) under label review (2 scans, labels kept as they are): 4 scans," in printed
    assert "specificity 100.0%" in printed and "B: bright spots in no-tumor slices" in printed
