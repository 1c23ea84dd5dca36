"""Real-world model shapes scan and export from their model.json alone, or are refused in words.

Each shape is built small with random weights (``tests.builders.shapes``); the job runs through
the real command line. A refused model fails its job once, before any scan is claimed.
"""

from __future__ import annotations

import pytest

from tests.builders.cli import export, scan_json, tumorlens
from tests.builders.scans import write_good_scans
from tests.builders.shapes import FAULTS, SHAPES, write_shape

SLOW = {"xception-pooling-avg", "inceptionv3-pooling-avg", "resnet50-pooling-avg",
        "densenet121-pooling-avg", "xception-150-logits-4-list-output"}  # seconds to build and trace


@pytest.fixture
def scans(tmp_path):
    write_good_scans(tmp_path / "scans", 3, size=(48, 40))  # gray and colour files alike
    return tmp_path / "scans"


@pytest.mark.parametrize("shape", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s
                                   for s in SHAPES])
def test_every_shape_scans_and_exports(settings, tmp_path, scans, shape):
    model = write_shape(tmp_path / shape, SHAPES[shape])
    summary = scan_json(scans, "--model", model)
    assert (summary["status"], summary["done"]) == ("done", 3), summary
    for row in export(summary["job"]):
        assert row["predicted_class"] in row["probabilities"]
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-3
        assert 0 <= row["peak"][0] < row["width"] and 0 <= row["peak"][1] < row["height"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_model_that_cannot_be_prepared_fails_its_job_once_in_words(settings, tmp_path, scans, fault):
    build, words = FAULTS[fault]
    model = write_shape(tmp_path / fault, build)
    result = tumorlens("scan", scans, "--local", "--model", model, expect=1)
    assert f"job 1 failed: the model {fault} cannot be analysed" in result.output
    for word in words:
        assert word in result.output
    assert "internal error" not in result.output
    assert not [row for row in export(1) if row["status"] == "failed"]
