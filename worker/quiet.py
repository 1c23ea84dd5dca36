"""Keep TensorFlow's start-up chatter off the terminal of a CLI command; ``tumorlens -v`` shows it.

Most of TensorFlow's C++ log lines obey ``TF_CPP_MIN_LOG_LEVEL``, which ``worker.cli`` defaults to 2.
Some do not. ``libtensorflow_framework.so.2`` and ``_pywrap_profiler_plugin.so`` each hold a copy of
``tensorflow/core/util/port.cc`` and of Abseil, and each copy writes, with Abseil's own ``LOG(INFO)``,
"oneDNN custom operations are on" the moment ``import tensorflow`` loads its library, after Abseil's
banner "All log messages before absl::InitializeLog() is called are written to STDERR". Abseil's
minimum level has no environment variable, and those lines are written to file descriptor 2 before
any Python code could set it, so the file descriptor is the only handle on them.

So, for the first ``import tensorflow`` only, fd 2 points at a temporary file; afterwards it is put
back and what was caught is written to it again, less the C++ log records below
``TF_CPP_MIN_LOG_LEVEL`` (and Abseil's banner, a warning). Errors, fatal messages and any line that
is not such a log record still reach the user, just after the import rather than during it; later
output, a real fault's included, goes straight to the terminal. The ``tensorflow`` and ``absl``
loggers and the warnings raised inside TensorFlow, Keras and absl are held to errors as well.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator

TENSORFLOW = "tensorflow"
# Each logger with the module that makes it: made earlier, "absl" would lack absl's logger class.
CHATTY_LOGGERS = {"tensorflow": "tensorflow", "absl": "absl.logging"}
CHATTY_MODULES = r"(tensorflow|keras|tf_keras|absl)(\.|$)"
SEVERITIES = b"IWEF"  # index = the TF_CPP_MIN_LOG_LEVEL that still shows it: 0 info ... 3 fatal
# Abseil's "I0101 12:00:00.123456   4242 port.cc:153] " (before absl::InitializeLog the seconds are
# the Unix time: "I0000 00:00:1796348188.289703") and TensorFlow's own
# "2026-01-01 12:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] ".
LOG_RECORD = re.compile(rb"(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "
                        rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )[^\s\]]+:\d+\] ")
ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# A Python traceback is never part of a C++ log record: it always starts a block that is kept.
PYTHON_FAULT = re.compile(rb"Traceback \(most recent call last\):|Exception in thread ")


def quiet_tensorflow() -> None:
    """Hold TensorFlow's start-up notices and Python chatter to errors in this process."""
    if not sys.warnoptions:  # -W or PYTHONWARNINGS set by the user win
        warnings.filterwarnings("ignore", module=CHATTY_MODULES)
    if TENSORFLOW in sys.modules:
        _quiet_loggers()  # too late for the start-up lines: they are already out
    elif not any(isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def min_log_level() -> int:
    """Return the TF_CPP_MIN_LOG_LEVEL TensorFlow reads (0, all, when unset or not a number)."""
    found = re.match(r"\s*([+-]?\d+)", os.environ.get("TF_CPP_MIN_LOG_LEVEL", ""))
    return int(found.group(1)) if found else 0


def filter_log(text: bytes, min_level: int) -> bytes:
    """Return ``text`` without the C++ log records (and their continuation lines) below ``min_level``."""
    kept, keep = [], True  # a line that is not a record's first goes with the record before it
    for line in text.splitlines(keepends=True):
        record = LOG_RECORD.match(line)
        if record:
            keep = SEVERITIES.index(record.group(1) or record.group(2)) >= min_level
        elif line.rstrip(b"\r\n") == ABSL_BANNER:
            keep = SEVERITIES.index(b"W") >= min_level
        elif PYTHON_FAULT.match(line):
            keep = True
        if keep:
            kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Catch what is written to fd 2 inside the block; write it back less what TF would not log."""
    import tempfile

    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to catch (started with it closed): nothing to keep quiet either
        yield
        return
    try:
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                _flush_stderr()  # Python's own buffered writes belong to the caught output
                os.dup2(saved, 2)
                caught.seek(0)
                _write_all(2, filter_log(caught.read(), min_log_level()))
    finally:
        os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Find ``tensorflow`` with the other finders and load it inside ``filtered_stderr``, once."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TENSORFLOW:
            return None
        sys.meta_path.remove(self)  # one import only; and the lookup below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """Run the real loader of ``tensorflow`` with fd 2 filtered."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module keeps its real loader, so nothing in TensorFlow sees this wrapper.
        module.__loader__ = module.__spec__.loader = self.loader
        try:
            with filtered_stderr():
                self.loader.exec_module(module)
        finally:
            _quiet_loggers()


def _quiet_loggers() -> None:
    for name, maker in CHATTY_LOGGERS.items():
        if maker in sys.modules:
            logging.getLogger(name).setLevel(logging.ERROR)


def _flush_stderr() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):  # None, closed or detached
        sys.stderr.flush()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
