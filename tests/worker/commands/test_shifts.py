"""``tumorlens evaluate --shift``: one table of controlled shifts, printed and as JSON."""

import json

import pytest
from click.testing import CliRunner

from pipeline.evaluate.shifts import SHIFTS
from tests.pipeline.mldata import bright_spot_model
from worker.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return bright_spot_model(tmp_path_factory.mktemp("model"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_shift_prints_one_table_of_every_shift_and_severity(model, prepared):
    result = run("evaluate", model, prepared, "--shift", "all", "--limit", "6")
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "bright-spot: controlled shifts of 6 scans" in printed
    for column in ("accuracy", "Δ accuracy", "sensitivity", "specificity", "pointing game"):
        assert column in printed
    for name in SHIFTS:
        assert name in printed
    assert "keep 80% *" in printed and "σ 2 px *" in printed  # the moderate severities marked
    # the model calls every inverted scan a tumor: the moderate inversion misses the bar
    assert "moderate shifts costing more than 3 points of accuracy:" in printed
    assert "inversion 50%" in printed


def test_shift_json_has_a_row_per_severity(model, prepared):
    result = run("evaluate", model, prepared, "--shift", "gamma, noise", "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert [r["shift"] for r in table["rows"]] == ["none"] + ["gamma"] * 3 + ["noise"] * 3
    assert table["scans"] == 10 and table["data"] == str(prepared)
    assert table["rows"][0]["accuracy"] == 1.0 and table["rows"][0]["pointing"] == 1.0
    keys = {"delta_accuracy", "sensitivity", "specificity", "pointing", "moderate"}
    assert keys <= set(table["rows"][1])


def test_unknown_shifts_and_unsupported_options_are_refused_in_words(model, prepared):
    unknown = run("evaluate", model, prepared, "--shift", "gamma,fog")
    assert unknown.exit_code == 2 and "unknown shift fog" in unknown.output
    assert "bias-field" in unknown.output  # the names it knows
    every = run("evaluate", model, prepared, "--shift", "gamma", "--method", "all")
    assert every.exit_code == 2 and "--shift scores one CAM method" in every.output
    faithful = run("evaluate", model, prepared, "--shift", "gamma", "--faithfulness", "2")
    assert faithful.exit_code == 2 and "--faithfulness is not measured with --shift" in faithful.output
