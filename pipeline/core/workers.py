"""Settings for processes that run many small numpy operations (the dataset stage's workers).

- ``keep_freed_memory``: glibc serves every array above its mmap threshold (128 kB at start, moving with
  use) as a fresh mapping and returns freed heap tops to the system, so a loop over 1 s clips page-faults
  its temporaries in again and again; once small long-lived arrays (caches) sit on the heap, this made
  the formant warp 2.5x slower (measured, ``benchmarks/bench_dataset.py --profile``). Fixed thresholds keep
  freed memory for reuse.
- ``one_thread_children``: worker processes started inside it get one BLAS / OpenMP thread each, so N
  workers on N cores run N threads, not N x N (two dataset workers on two cores ran 1.8x slower with the
  default OpenBLAS threads).
- ``thread_pool``: a thread pool whose queued jobs are dropped when the block fails, so an error in the first
  of thousands of queued espeak-ng jobs is reported at once, not after the rest have run.
- ``cpu_session``: an ONNX Runtime session on the CPU with a stated number of threads; ONNX Runtime's default
  takes every core, which fights the threads and processes around it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 64 << 20
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def keep_freed_memory() -> bool:
    """Keep arrays up to 32 MB on the heap and freed memory for reuse (glibc); False where not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))


@contextlib.contextmanager
def one_thread_children() -> Iterator[None]:
    """Processes started in this block inherit one BLAS / OpenMP thread each (unless the user set a count)."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    for v in THREAD_VARS:
        os.environ.setdefault(v, "1")
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


@contextlib.contextmanager
def thread_pool(threads: int) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """A ``ThreadPoolExecutor`` that waits for its jobs on success and cancels the queued ones on an error."""
    pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def cpu_session(model: str | bytes, threads: int = 1, quiet: bool = False) -> Any:
    """An ONNX Runtime session for ``model`` (a path or the bytes) on the CPU: ``threads`` intra-op threads, one
    inter-op thread; ``quiet``: errors only in its log."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    if quiet:
        opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
