"""Job processes keep numpy's BLAS to one thread: its idle threads would spin on the model's cores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLAS_THREADS = """
import json, sys
from threadpoolctl import threadpool_info
import numpy
def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
before = blas_threads()
{action}
print(json.dumps([before, blas_threads()]))
"""

ACTIONS = {
    "single_threaded_blas": "from worker.cpu import single_threaded_blas; single_threaded_blas()",
    # a pool process of a queued worker, as Celery starts it
    "worker_process_init": "from worker.tasks import init_pool_process; init_pool_process()",
    # an in-process job (``scan --local``): the model is prepared even for an empty folder, so
    # SciPy's BLAS, which importing Keras loads, is there too and must be limited as well
    "run_local": """
from pathlib import Path
from pipeline.model.spec import load_spec
from worker import jobs
from worker.db import make_session_factory, session_scope, upgrade
from worker.local import run_local
work = Path.cwd()  # the test's tmp_path
(work / "scans").mkdir()
url = f"sqlite:///{work / 'store.db'}"
upgrade(url)
factory = make_session_factory(url)
with session_scope(factory) as session:
    job_id = jobs.create_job(session, work / "scans", load_spec(sys.argv[1]), "gradcam").id
assert run_local(factory, job_id, work / "out")["scans"] == 0
""",
}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_job_processes_run_numpy_blas_on_one_thread(action, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUMORLENS_HOME": str(tmp_path)}
    env.pop("OPENBLAS_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-c", BLAS_THREADS.format(action=ACTIONS[action]),
                           str(ROOT / "models" / "default")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before and all(n > 1 for n in before)  # OpenBLAS's default: a thread per core
    assert len(after) >= len(before) and after == [1] * len(after)  # every BLAS loaded by then
