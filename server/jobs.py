"""Background jobs of this process: bulk imports (indexing/bulk_import.py), one at a time, kept in memory.

A job lives in the process that runs it; the version it writes reaches the other replicas through the bundle on
disk (IndexHolder.refresh). A restart forgets the jobs (a running one stops, and its version is not written).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from artlens.indexing import bulk_import
from artlens.indexing.store.bundle import Bundle

from .errors import ServiceError, without_paths
from .index_holder import IndexHolder, IndexState
from .settings import Settings

KEPT_JOBS = 100  # finished jobs remembered for GET /v1/jobs/{id}


class JobService:
    def __init__(self, holder: IndexHolder, settings: Settings) -> None:
        self.holder = holder
        self.settings = settings
        self._jobs: OrderedDict[str, bulk_import.ImportJob] = OrderedDict()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start_import(self, csv: bytes) -> dict:
        """Check the CSV and start its import in a thread; the job's record (status queued or running)."""
        if not self.settings.import_root:
            raise ServiceError("import_disabled", "bulk import is off on this server (set ARTLENS_IMPORT_ROOT to the"
                               " directory the CSV names its images in)", 503)
        root = Path(self.settings.import_root)
        if not root.is_dir():
            raise ServiceError("import_disabled", "the import root of this server is not a directory; the server log"
                               " has its setting", 503)
        state = self.holder.state
        plan = bulk_import.plan_import(csv, root, set(state.rows))
        with self._lock:
            running = next((j for j in self._jobs.values() if j.status in ("queued", "running")), None)
            if running is not None:
                raise ServiceError("job_running", f"import job {running.id} is still running; one import runs at a"
                                   " time (GET /v1/jobs/{id} shows its progress)", 409)
            job = bulk_import.ImportJob(total=plan.total, skipped=list(plan.skipped))
            job.done = len(plan.skipped)
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.pop(oldest)
        thread = threading.Thread(target=self._run, args=(job, plan, root, state), name=f"artlens-import-{job.id}",
                                  daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return _public(job.snapshot())

    def _run(self, job: bulk_import.ImportJob, plan: bulk_import.ImportPlan, root: Path, state: IndexState) -> None:
        def write(append) -> Bundle:
            return self.holder.write(lambda current: append(current.bundle)).bundle

        bulk_import.run_import(job, plan, root, state.bundle, state.recognizer.embedder, write,
                               max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_image_bytes,
                               budget=self.holder.decode_budget)

    def get(self, job_id: str) -> dict:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            shown = job_id if len(job_id) <= 40 else job_id[:40] + "…"
            raise ServiceError("job_not_found", f"no job {shown!r} on this server (jobs are kept in the memory of"
                               " the replica that runs them, until it restarts)", 404)
        return _public(job.snapshot())

    def close(self, timeout_s: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout=timeout_s)


def _public(snapshot: dict) -> dict:
    """A job's record as clients see it: the messages it carries name no server path (a guard: they are written
    without one)."""
    skipped = [{**row, "reason": without_paths(row["reason"])} for row in snapshot["skipped"]]
    error = snapshot["error"] and without_paths(snapshot["error"])
    return {**snapshot, "skipped": skipped, "error": error}
