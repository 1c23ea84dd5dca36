"""Heatmap archives read from many threads at once, as the web's overlay threads read them."""

from __future__ import annotations

import gc
import io
import threading

import numpy as np

from pipeline.io.npz import load_arrays, npz_bytes


class _Collected:
    def __del__(self):  # objects with finalisers make the collector run between allocations
        pass


def test_archives_read_in_parallel_threads_never_fail():
    # numpy parses each .npy header with ast.literal_eval; without load_arrays' lock, CPython 3.11
    # raised "AST constructor recursion depth mismatch" here in 2 of 3 runs (collections during a
    # parse in another thread), as the web did under parallel clients.
    data = npz_bytes(cam=np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10), size=np.array([5, 7]))
    thresholds = gc.get_threshold()
    gc.set_threshold(5, 1, 1)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(2500):
                arrays = load_arrays(io.BytesIO(data))
                assert arrays["size"].tolist() == [5, 7] and arrays["cam"].shape == (10, 10)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def churn() -> None:
        for _ in range(120_000):
            garbage = [_Collected() for _ in range(3)]
            garbage.append(garbage)

    threads = [threading.Thread(target=read) for _ in range(6)] + [threading.Thread(target=churn) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        gc.set_threshold(*thresholds)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
