"""How a process that runs jobs shares its cores: TensorFlow's threads do the heavy math.

numpy's BLAS (OpenBLAS) starts one thread per core by default, and its idle threads spin for a
while after each call. A scan's outputs call it only for small matrix products (the map's
upsampling, ``pipeline.io.heatmaps.upsample``), so those threads never help, and their spinning takes
a core from the model and the writer threads. ``benchmarks/bench_scan.py``, small CNN, 2 cores:
48.6 scans/s with OpenBLAS's default and 73.6 with one BLAS thread (CPU per scan 41.7 against
26.0 ms).
"""

from __future__ import annotations

def single_threaded_blas() -> None:
    """Keep every BLAS loaded in this process to one thread (and in processes forked from it).

    Call it again once the model is prepared: importing Keras loads SciPy's own OpenBLAS, with a
    thread per core, after the first call limited numpy's.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
