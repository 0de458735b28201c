"""Thread and process settings for the stages that run many small jobs."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.core.workers import thread_pool


def test_a_failing_job_drops_the_queued_ones_and_is_raised() -> None:
    ran: list[int] = []
    release = threading.Event()

    def job(k: int) -> int:
        if k == 0:
            release.wait(5)
            raise RuntimeError("espeak-ng failed")
        time.sleep(0.005)
        ran.append(k)
        return k

    with pytest.raises(RuntimeError, match="espeak-ng failed"), thread_pool(1) as pool:
        jobs = [pool.submit(job, k) for k in range(1000)]
        release.set()
        for j in jobs:
            j.result()
    assert len(ran) < 100  # a plain ThreadPoolExecutor runs all 999 before the error leaves the block


def test_on_success_every_job_runs() -> None:
    with thread_pool(2) as pool:
        jobs = [pool.submit(lambda k: k * k, k) for k in range(100)]
    assert [j.result() for j in jobs] == [k * k for k in range(100)]
