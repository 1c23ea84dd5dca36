"""``tumorlens prepare-data`` and ``split-cases`` through click and as the installed program."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.data.near_duplicates import MAX_DISTANCE
from tests.builders.cli import tumorlens
from tests.pipeline.folders import build_source
from worker.cli import main
from worker.commands.data import DEFAULT_MAX_DISTANCE


@pytest.fixture
def src(tmp_path: Path) -> Path:
    build_source(tmp_path / "src", {"yes": 6, "no": 5}, variants=2)
    (tmp_path / "src" / "pred").mkdir()
    return tmp_path / "src"


def run(*args: str):
    return CliRunner().invoke(main, ["prepare-data", *args])


def test_prints_a_report_for_a_person(src, tmp_path):
    result = run(str(src), str(tmp_path / "dest"), "--seed", "2")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("23 images (12 yes, 11 no); 2 exact duplicates;")
    assert "TRAIN" in result.output and "VALIDATION" in result.output and "TEST" in result.output
    assert "left out: pred (unlabelled, 0 file(s))" in result.output
    assert (tmp_path / "dest" / "manifest.csv").is_file()


def test_json_summary_and_options_reach_the_preparation(src, tmp_path):
    result = run(str(src), str(tmp_path / "dest"), "--json", "--split", "50,30,20", "--seed", "4",
                 "--max-distance", "0")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["requested"] == {"TRAIN": 50.0, "VALIDATION": 30.0, "TEST": 20.0}
    assert summary["seed"] == 4 and summary["max_distance"] == 0
    assert summary["groups"] > 11  # 11 base images; at 0 bits cropped copies stand alone
    assert summary == {**json.loads((tmp_path / "dest" / "summary.json").read_text()),
                       "linked": summary["linked"], "copied": summary["copied"]}


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nowhere", "{tmp}/dest"], "source folder {tmp}/nowhere does not exist"),
    (["{tmp}", "{tmp}/dest"], "{tmp} needs YES and NO folders"),
    (["{src}", "{tmp}/dest", "--split", "70,30"], "--split must be three non-negative numbers"),
    (["{src}", "{tmp}/dest", "--split", "60,20,10"], "--split must sum to 100"),
])
def test_bad_input_exits_1_with_a_sentence(src, tmp_path, args, message):
    result = run(*(a.format(tmp=tmp_path, src=src) for a in args))
    assert result.exit_code == 1
    assert f"Error: {message.format(tmp=tmp_path)}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "dest").exists()


def test_non_empty_destination_needs_force(src, tmp_path):
    assert run(str(src), str(tmp_path / "dest")).exit_code == 0
    again = run(str(src), str(tmp_path / "dest"))
    assert again.exit_code == 1 and "is not empty" in again.output and "--force" in again.output
    forced = run(str(src), str(tmp_path / "dest"), "--force")
    assert forced.exit_code == 0, forced.output


def test_default_limit_is_the_measured_one():
    assert DEFAULT_MAX_DISTANCE == MAX_DISTANCE


def test_runs_as_a_process_without_loading_tensorflow(src, tmp_path):
    """The command runs in a fresh process, and data preparation never pulls TensorFlow in."""
    code = ("import sys; from worker.cli import main\n"
            "try:\n    main(['prepare-data', sys.argv[1], sys.argv[2]])\n"
            "except SystemExit as exit_:\n"
            "    assert exit_.code in (0, None), exit_.code\n"
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "dest")],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("False")
    assert "23 images" in done.stdout


def test_split_cases_command(tmp_path):
    for case in ("A", "B", "C", "D", "E"):
        folder = tmp_path / "src" / "tumor" / case
        folder.mkdir(parents=True)
        Image.new("L", (8, 8)).save(folder / f"{case}_1.jpg")
    result = tumorlens("split-cases", tmp_path / "src", tmp_path / "dest", "--split", "60,20,20")
    assert "TRAIN 3 slices" in result.output and "TEST 1 slices" in result.output
    bad = CliRunner().invoke(main, ["split-cases", str(tmp_path / "src"), str(tmp_path / "x"),
                                    "--split", "60,40"])
    assert bad.exit_code != 0 and "60,20,20" in bad.output


def test_a_label_review_list_is_kept_with_the_split_and_reported(src, tmp_path):
    import hashlib

    doubtful = sorted((src / "NO").iterdir())[0]
    listed = tmp_path / "review.json"
    listed.write_text(json.dumps({"format": 1, "groups": [{"reason": "a bright region", "scans": [
        {"path": f"NO/{doubtful.name}", "sha256": hashlib.sha256(doubtful.read_bytes()).hexdigest()}]}]}))
    result = run(str(src), str(tmp_path / "out"), "--label-review", str(listed))
    assert result.exit_code == 0, result.output
    placed = json.loads((tmp_path / "out" / "label_review.json").read_text())
    [group] = placed["groups"]
    assert group["reason"] == "a bright region" and group["group"].startswith("group ")
    assert f"label review: {group['group']} ({group['split']}) reported both ways" in result.output
    listed.write_text(json.dumps({"groups": [{"reason": "r", "scans": [{"path": "no/x.jpg", "sha256": "0" * 64}]}]}))
    bad = run(str(src), str(tmp_path / "again"), "--label-review", str(listed))
    assert bad.exit_code == 1 and "no/x.jpg is not in the split" in bad.output
