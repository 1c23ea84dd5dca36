"""The stages of one batch of scans: load, decode, analyse, write outputs, commit.

One module a stage (``claim``, ``analyse``, ``write``, ``record``), over the record that
``items`` defines. ``worker.jobs.process_batch`` runs them one after the other; ``worker.local``
overlaps them across batches (the next batch is decoded and the previous one written while this
one is analysed). Only ``load`` and ``commit`` touch the store, each in one short transaction; a
batch that stops between them leaves its scans pending, to be picked up again.
"""

from worker.batch.analyse import analyse, decode
from worker.batch.claim import load
from worker.batch.items import (CLOSED, INTERNAL_ERROR, MAX_ATTEMPTS, BatchOutcome, Item, Work,
                                raise_if_out_of_time)
from worker.batch.record import commit
from worker.batch.write import output_stem, write

__all__ = ["CLOSED", "INTERNAL_ERROR", "MAX_ATTEMPTS", "BatchOutcome", "Item", "Work", "analyse",
           "commit", "decode", "load", "output_stem", "raise_if_out_of_time", "write"]
