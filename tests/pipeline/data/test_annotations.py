"""Outlines from VIA JSON, YOLO boxes and mask images become masks of the right area and place."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.annotations import AnnotationError, Annotations, load_via, shapes_mask, yolo_mask

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def via_entry(filename, size, *shapes):
    return {f"{filename}{size}": {"filename": filename, "size": size, "file_attributes": {},
                                  "regions": [{"shape_attributes": s, "region_attributes": {}}
                                              for s in shapes]}}


def write_via(path, *entries):
    content = {}
    for entry in entries:
        content.update(entry)
    path.write_text(json.dumps(content))
    return path


def test_polygon_fills_its_area():
    square = {"name": "polygon", "all_points_x": [10, 50, 50, 10], "all_points_y": [20, 20, 60, 60]}
    mask = shapes_mask([square], (100, 80))
    assert mask.shape == (80, 100)
    assert mask.sum() == pytest.approx(40 * 40, rel=0.06)  # the outline itself adds a pixel rim
    assert mask[40, 30] and not mask[70, 30] and not mask[40, 70]


def test_circle_has_area_pi_r_squared():
    mask = shapes_mask([{"name": "circle", "cx": 50, "cy": 40, "r": 20}], (100, 100))
    assert mask.sum() == pytest.approx(math.pi * 20 ** 2, rel=0.05)
    assert mask[40, 50] and not mask[40, 75]


def test_ellipse_rotation_turns_the_long_axis():
    flat = {"name": "ellipse", "cx": 50, "cy": 50, "rx": 40, "ry": 10, "theta": 0.0}
    upright = {**flat, "theta": math.pi / 2}
    flat_mask, upright_mask = shapes_mask([flat], (100, 100)), shapes_mask([upright], (100, 100))
    for mask in (flat_mask, upright_mask):
        assert mask.sum() == pytest.approx(math.pi * 40 * 10, rel=0.06)
    assert flat_mask[50, 85] and not flat_mask[85, 50]
    assert upright_mask[85, 50] and not upright_mask[50, 85]
    ys, xs = np.nonzero(upright_mask)
    assert xs.max() - xs.min() < 25 and ys.max() - ys.min() > 75


def test_ellipse_at_45_degrees_lies_on_the_diagonal():
    tilted = {"name": "ellipse", "cx": 50, "cy": 50, "rx": 40, "ry": 8, "theta": math.pi / 4}
    mask = shapes_mask([tilted], (100, 100))
    assert mask[75, 75] and mask[25, 25]  # y grows downwards: +45° runs top-left to bottom-right
    assert not mask[25, 75] and not mask[75, 25]


def test_several_regions_make_one_mask(tmp_path):
    left = {"name": "circle", "cx": 20, "cy": 20, "r": 10}
    right = {"name": "polygon", "all_points_x": [60, 90, 90, 60], "all_points_y": [60, 60, 90, 90]}
    path = write_via(tmp_path / "outlines.json", via_entry("y1.jpg", 1234, left, right))
    mask = Annotations(path).mask(tmp_path / "elsewhere" / "y1.jpg", (100, 100))
    assert mask[20, 20] and mask[75, 75] and not mask[50, 50]
    assert mask.sum() == pytest.approx(math.pi * 100 + 30 * 30, rel=0.08)


def test_unknown_images_have_no_mask(tmp_path):
    path = write_via(tmp_path / "outlines.json", via_entry("y1.jpg", 1, {"name": "circle", "cx": 5, "cy": 5, "r": 2}))
    annotations = Annotations(path)
    assert annotations.mask(tmp_path / "y2.jpg", (10, 10)) is None
    assert not annotations.has(tmp_path / "y2.jpg") and annotations.has(tmp_path / "y1.jpg")


def test_unsupported_shape_is_named(tmp_path):
    with pytest.raises(AnnotationError, match="point"):
        shapes_mask([{"name": "point", "cx": 1, "cy": 1}], (10, 10))


def test_not_via_json_is_refused_with_a_reason(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": {"no": "filename"}}')
    with pytest.raises(AnnotationError, match="not VIA JSON"):
        load_via(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(AnnotationError, match="cannot read"):
        load_via(broken)


def test_yolo_boxes_are_normalised_to_the_image(tmp_path):
    boxes = tmp_path / "scan.txt"
    boxes.write_text("0 0.5 0.25 0.2 0.1\n0 0.1 0.9 0.1 0.1\n")
    mask = yolo_mask(boxes, (200, 100))  # width 200, height 100
    assert mask.shape == (100, 200)
    assert mask.sum() == 40 * 10 + 20 * 10
    assert mask[25, 100] and mask[90, 20] and not mask[50, 100]


def test_yolo_line_without_numbers_is_refused(tmp_path):
    boxes = tmp_path / "scan.txt"
    boxes.write_text("0 0.5 0.5\n")
    with pytest.raises(AnnotationError, match="line 1"):
        yolo_mask(boxes, (10, 10))


def test_mask_image_beside_the_scan_is_found_and_resized(tmp_path):
    drawn = np.zeros((50, 50), dtype=np.uint8)
    drawn[10:20, 30:40] = 255
    Image.fromarray(drawn).save(tmp_path / "case_7_mask.png")
    annotations = Annotations()
    assert annotations.mask(tmp_path / "case_7.jpg", (50, 50)).sum() == 100
    doubled = annotations.mask(tmp_path / "case_7.jpg", (100, 100))
    assert doubled.sum() == 400 and doubled[25, 65]


def test_yolo_folder_source(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "scan.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    mask = Annotations(tmp_path / "labels").mask(tmp_path / "images" / "scan.jpg", (40, 40))
    assert mask.sum() == 20 * 20


def test_missing_source_is_refused(tmp_path):
    with pytest.raises(AnnotationError, match="do not exist"):
        Annotations(tmp_path / "nowhere.json")


def test_br35h_outlines_cover_part_of_the_image():
    source = DATA / "br35h" / "tumor_outlines_via.json"
    if not source.is_file():
        pytest.skip(f"the Br35H outlines are not at {source} (shared data absent on this machine)")
    annotations = Annotations(source)
    image = DATA / "br35h" / "yes" / "y1.jpg"
    with Image.open(image) as opened:
        size = opened.size
    mask = annotations.mask(image, size)
    assert mask.shape == (size[1], size[0])
    assert 0.01 < mask.mean() < 0.5
    assert len(load_via(source)["y1.jpg"]) == 2  # y1 has two outlined regions
