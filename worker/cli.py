"""The ``tumorlens`` command line: a thin face over the worker floor's job functions.

Each command group lives in ``worker/commands/``; heavy imports (TensorFlow) happen inside the
commands that need them, so ``tumorlens --help`` and the web/queue commands start fast.
"""

from __future__ import annotations

import importlib
import logging
import os

import click

from worker.quiet import quiet_tensorflow

# TensorFlow's C++ start-up chatter (CPU features...) is noise on a user's terminal; errors still
# show. Set before any command imports TensorFlow; an explicit value wins. The lines that ignore it
# (oneDNN, Abseil's banner) are held back by worker.quiet unless -v is given.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COMMAND_MODULES = (
    "worker.commands.scan",  # scan, resume, cancel
    "worker.commands.results",  # export, neurons
    "worker.commands.db",  # db upgrade, user create
    "worker.commands.data",  # prepare-data, split-cases
    "worker.commands.train",  # train
    "worker.commands.evaluate",  # evaluate
    "worker.commands.model",  # check-model, init-model, fit-distribution
    "worker.commands.services",  # worker, web
    "worker.commands.up",  # up
)
# Commands whose output is a service's log, levelled by their own --loglevel: not made quiet.
LOG_COMMANDS = ("worker",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True,
              help="More log output, TensorFlow's start-up notices included (-vv for debug).")
@click.version_option(package_name="tumorlens")
def main(verbose: int) -> None:
    """Classify brain MRI scans and show where the model looked."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose and click.get_current_context().invoked_subcommand not in LOG_COMMANDS:
        quiet_tensorflow()  # before the command runs: it may import TensorFlow


def _register() -> None:
    for name in COMMAND_MODULES:
        for command in importlib.import_module(name).COMMANDS:
            main.add_command(command)


_register()
