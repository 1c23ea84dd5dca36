"""TensorFlow's start-up chatter stays off the terminal unless ``-v``; errors always reach it.

The command-line tests run the real CLI in a process of its own: the lines in question are written
by TensorFlow's shared libraries to file descriptor 2 while ``import tensorflow`` loads them, so
only a fresh process that imports TensorFlow shows (or hides) them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.builders.models import build_model
from tests.builders.processes import PROJECT_ROOT, tumorlens_argv, tumorlens_env
from tests.builders.scans import write_good_scans
from worker.quiet import filter_log, filtered_stderr, min_log_level

NOISE = ("oneDNN", "absl", "cpu_feature_guard", "I0000", "This TensorFlow binary")
ONEDNN_NOTICE = "oneDNN custom operations are on"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("model"), "sequential", input_size=(32, 32))


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    write_good_scans(folder, 3)
    return folder


def cli_env(home, **env) -> dict[str, str]:
    """Return the environment of a CLI run: the CLI's own TensorFlow log defaults, oneDNN on."""
    values = tumorlens_env(home)
    values.pop("TF_CPP_MIN_LOG_LEVEL")  # the CLI's default is what is tested, not the builders'
    # oneDNN is on by default only on CPUs with AVX-512 VNNI, AMX...: on, its notice is sure to come.
    values["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return {**values, **env}


def run(env: dict[str, str], *args) -> subprocess.CompletedProcess:
    return subprocess.run(tumorlens_argv(*map(str, args)), env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)


def python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    return subprocess.run([sys.executable, "-c", code], env={**environment, **env},
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def test_scan_prints_no_tensorflow_start_up_lines(tmp_path, model, scans):
    done = run(cli_env(tmp_path), "scan", scans, "--local", "--model", model)
    assert done.returncode == 0, done.stderr
    assert "3 done, 0 failed" in done.stdout
    for noise in NOISE:
        assert noise not in done.stdout and noise not in done.stderr, done.stderr


def test_verbose_shows_tensorflow_start_up_lines(tmp_path, model, scans):
    done = run(cli_env(tmp_path), "-v", "scan", scans, "--local", "--model", model)
    assert done.returncode == 0, done.stderr
    assert ONEDNN_NOTICE in done.stderr and "absl::InitializeLog" in done.stderr


def test_tf_cpp_min_log_level_set_by_the_user_wins(tmp_path, model, scans):
    done = run(cli_env(tmp_path, TF_CPP_MIN_LOG_LEVEL="0"), "scan", scans, "--local", "--model", model)
    assert done.returncode == 0, done.stderr
    assert ONEDNN_NOTICE in done.stderr


def test_an_error_after_tensorflow_loads_is_shown(tmp_path, model, scans):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text(model.read_text())
    (broken / "model.keras").write_bytes(b"not a keras file" * 16)
    done = run(cli_env(tmp_path), "scan", scans, "--local", "--model", broken)
    assert done.returncode != 0
    assert "cannot load model.keras" in done.stderr
    assert ONEDNN_NOTICE not in done.stderr


def test_an_error_before_tensorflow_loads_is_shown(tmp_path, model):
    done = run(cli_env(tmp_path), "scan", tmp_path / "no-such-folder", "--local", "--model", model)
    assert done.returncode != 0 and "no such folder" in done.stderr


AFTER_THE_IMPORT = "import logging, os, sys, warnings\n" + textwrap.dedent(r"""
    from worker.quiet import quiet_tensorflow

    quiet_tensorflow()
    assert "tensorflow" not in sys.modules  # the hook alone loads nothing
    import keras, tensorflow
    from absl import logging as absl_logging

    print(type(tensorflow.__loader__).__name__, type(tensorflow.__spec__.loader).__name__,
          type(absl_logging.get_absl_logger()).__name__,
          *(logging.getLevelName(logging.getLogger(name).level) for name in ("tensorflow", "absl")))
    for module in ("keras.src.models.model", "tensorflow.python.ops", "absl.flags", "pipeline.x"):
        warnings.warn_explicit("chatter from " + module, UserWarning, "x.py", 1, module=module)
    os.write(2, b"I0000 00:00:1.5  7 later.cc:1] written after the import\n")
""")


def test_only_the_import_is_filtered_and_python_chatter_is_held_to_errors():
    done = python(AFTER_THE_IMPORT, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SourceFileLoader", "SourceFileLoader", "ABSLLogger", "ERROR", "ERROR"]
    lines = done.stderr.splitlines()
    assert lines[0].endswith("UserWarning: chatter from pipeline.x")  # our own warnings stay
    assert lines[-1] == "I0000 00:00:1.5  7 later.cc:1] written after the import"  # fd 2 is back
    assert ONEDNN_NOTICE not in done.stderr and "keras" not in done.stderr


def test_filter_log_drops_records_below_the_level_with_their_continuations():
    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            b"I0000 00:00:1796348188.289703    5693 port.cc:153] oneDNN custom operations are on.\n"
            b"I0000 00:00:1796348188.3    5693 cpu_feature_guard.cc:227] This TensorFlow binary is\n"
            b"To enable the following instructions: AVX2, rebuild TensorFlow.\n"
            b"2026-01-30 22:44:42.456316: W tensorflow/core/x.cc:12] a TSL warning\n"
            b"E0000 00:00:1796348188.4    5693 cuda_dnn.cc:8579] a real error\n"
            b"  with its second line\n"
            b"I0000 00:00:1796348188.5    5693 port.cc:153] more info\n"
            b"Traceback (most recent call last):\n"
            b"  File \"x.py\", line 1\n")
    assert filter_log(text, 2) == (b"E0000 00:00:1796348188.4    5693 cuda_dnn.cc:8579] a real error\n"
                                   b"  with its second line\n"
                                   b"Traceback (most recent call last):\n"
                                   b"  File \"x.py\", line 1\n")
    assert filter_log(text, 0) == text
    assert filter_log(b"plain text from somewhere else\n", 3) == b"plain text from somewhere else\n"


def test_filtered_stderr_writes_back_what_is_kept(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        os.write(2, b"I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"F0000 00:00:1.0  1 guard.cc:1] a fatal message\n")
        os.write(2, b"a line that is no log record\n")
    assert capfd.readouterr().err == ("F0000 00:00:1.0  1 guard.cc:1] a fatal message\n"
                                      "a line that is no log record\n")


def test_filtered_stderr_restores_fd_2_when_the_block_raises(capfd):
    with pytest.raises(ImportError), filtered_stderr():
        os.write(2, b"E0000 00:00:1.0  1 loader.cc:1] cannot open libfoo.so\n")
        raise ImportError("libfoo.so")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "E0000 00:00:1.0  1 loader.cc:1] cannot open libfoo.so\nafter\n"


@pytest.mark.parametrize("value, level", [("2", 2), (" 1", 1), ("", 0), ("loud", 0)])
def test_min_log_level_reads_tf_cpp_min_log_level_as_tensorflow_does(monkeypatch, value, level):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", value)
    assert min_log_level() == level
