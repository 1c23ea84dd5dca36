"""Fixtures of the command tests: a small prepared split, built once per test module."""

from __future__ import annotations

import pytest

from tests.pipeline.mldata import make_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data"), {"TRAIN": 8, "VALIDATION": 4, "TEST": 5})
