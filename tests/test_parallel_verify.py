"""A shortlist verified on several threads: the same answers as on one, the caller never waits for a busy pool."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from artlens.recognition.parallel import map_with_helpers, resolve_threads
from artlens.recognition.recognizer import Recognizer

from .conftest import ESTENSE, SMVS, needs_shared


def test_results_come_back_in_job_order_and_helpers_take_part():
    ran_on: list[str] = []

    def run(job: int) -> int:
        ran_on.append(threading.current_thread().name)
        time.sleep(0.01)  # long enough that a free helper thread picks up jobs too
        return job * job

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="helper") as pool:
        assert map_with_helpers(pool, run, list(range(12)), threads=3) == [j * j for j in range(12)]
    assert threading.current_thread().name in ran_on and any(n.startswith("helper") for n in ran_on)


def test_a_busy_pool_does_not_hold_the_caller_up():
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        blocker = pool.submit(release.wait, 30)  # every pool thread is taken by another request
        started = time.monotonic()
        assert map_with_helpers(pool, lambda job: job + 1, [1, 2, 3], threads=4) == [2, 3, 4]
        assert time.monotonic() - started < 10  # ran on the caller alone, not after the blocker
        release.set()
        blocker.result()


def test_an_error_in_any_job_reaches_the_caller_and_stops_the_rest():
    done: list[int] = []

    def run(job: int) -> int:
        if job == 3:
            raise ValueError("job 3 failed")
        done.append(job)
        return job

    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(ValueError, match="job 3 failed"):
        map_with_helpers(pool, run, list(range(50)), threads=2)
    assert len(done) < 49  # the jobs after the failure were not all run


def test_thread_count_setting():
    assert 1 <= resolve_threads(0) <= 4
    assert resolve_threads(3) == 3
    with pytest.raises(ValueError, match="verify_threads"):
        resolve_threads(-1)


@needs_shared
def test_the_answers_do_not_depend_on_the_verification_threads(smvs_bundle):
    one, four = (Recognizer(smvs_bundle, config={"verify_threads": n}) for n in (1, 4))
    photos = [SMVS / "query" / "001.jpg", SMVS / "query" / "013.jpg", SMVS / "nomatch" / "landmark-001.jpg",
              ESTENSE / "query" / "011_043.jpg"]  # a painting, a hard one, a building, a wall of another collection
    for photo in photos:
        a, b = one.analyse(photo), four.analyse(photo)
        assert [c.row for c in a.candidates] == [c.row for c in b.candidates]
        assert [c.verification.inliers for c in a.candidates] == [c.verification.inliers for c in b.candidates]
        assert one.decide(a).matches == four.decide(b).matches
    assert one.decide(one.analyse(photos[0])).status == "match"
