"""The box's job model on a real SQLite file: states, results, cancel, and what a restart does to a job that
was running (restartable kinds run again, others are failed)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.box.jobs import Job, JobFailed, JobRunner, JobState, JobStore


async def _until(store: JobStore, job_id: str, *states: JobState) -> Job:
    """Wait on the condition (the job reaching one of ``states``), bounded by the test timeout."""
    while True:
        job = store.get(job_id)
        assert job is not None
        if job.state in states:
            return job
        await asyncio.sleep(0.01)


def test_jobs_run_in_order_with_results_and_errors(tmp_path: Path) -> None:
    async def main() -> None:
        runner = JobRunner(JobStore(tmp_path))

        def work(job: Job, payload: bytes, cancelled: Any) -> list[dict[str, Any]]:
            if job.params.get("fail"):
                raise JobFailed("no face found")
            if job.params.get("crash"):
                raise RuntimeError("bug")
            return [{"n": i, "payload": payload.decode()} for i in range(job.params["n"])]

        runner.register("count", work, restartable=True)
        runner.start()
        a = runner.submit("count", "app1", {"n": 25}, b"pic")
        b = runner.submit("count", "app1", {"fail": True})
        c = runner.submit("count", "app2", {"crash": True})
        done = await _until(runner.store, a.job_id, JobState.SUCCEEDED)
        assert done.result_count == 25 and done.started_ms is not None and done.finished_ms is not None
        rows = runner.store.results(a.job_id, offset=20, limit=10)
        assert [r["n"] for r in rows] == [20, 21, 22, 23, 24] and rows[0]["payload"] == "pic"
        failed = await _until(runner.store, b.job_id, JobState.FAILED)
        assert failed.error == "no face found"
        crashed = await _until(runner.store, c.job_id, JobState.FAILED)
        assert crashed.error == "internal error: RuntimeError"
        jobs, total = runner.store.list_jobs("count", "app1")
        assert total == 2 and [j.job_id for j in jobs] == [b.job_id, a.job_id]  # newest first
        jobs, total = runner.store.list_jobs("count", "app1", state=JobState.FAILED)
        assert total == 1
        with pytest.raises(ValueError, match="unknown job kind"):
            runner.submit("nope", "app1", {})
        await runner.stop()
        runner.store.close()

    asyncio.run(main())


def test_cancel_a_running_and_a_queued_job(tmp_path: Path) -> None:
    started = threading.Event()

    def work(job: Job, payload: bytes, cancelled: Any) -> list[dict[str, Any]]:
        started.set()
        while not cancelled():  # a long search that looks at its flag between steps
            threading.Event().wait(0.01)
        return [{"partial": True}]

    async def main() -> None:
        runner = JobRunner(JobStore(tmp_path))
        runner.register("slow", work, restartable=True)
        runner.start()
        a = runner.submit("slow", "o", {})
        b = runner.submit("slow", "o", {})
        await asyncio.to_thread(started.wait, 30)
        assert runner.store.get(a.job_id).state == JobState.RUNNING  # type: ignore[union-attr]
        assert runner.cancel(b.job_id)  # queued: never runs
        assert runner.cancel(a.job_id)
        job = await _until(runner.store, a.job_id, JobState.CANCELLED)
        assert job.result_count == 0 and runner.store.results(a.job_id) == []
        assert runner.store.get(b.job_id).state == JobState.CANCELLED  # type: ignore[union-attr]
        assert not runner.cancel(a.job_id)  # ended already
        while runner.counts[JobState.CANCELLED] < 1:
            await asyncio.sleep(0.01)
        await runner.stop()
        runner.store.close()

    asyncio.run(main())


def test_a_job_running_at_a_crash_restarts_or_fails_by_kind(tmp_path: Path) -> None:
    # the "crash": jobs marked running in the file, no runner left to finish them
    store = JobStore(tmp_path)
    again = store.create("search", "o", {"n": 3})
    lost = store.create("export", "o", {})
    waiting = store.create("search", "o", {"n": 1})
    assert store.start(again.job_id) and store.start(lost.job_id)
    store.close()

    async def main() -> None:
        runner = JobRunner(JobStore(tmp_path))
        runner.register(
            "search", lambda job, p, c: [{"i": i} for i in range(job.params["n"])], restartable=True
        )
        runner.register("export", lambda job, p, c: [], restartable=False)
        runner.start()
        job = await _until(runner.store, again.job_id, JobState.SUCCEEDED)
        assert job.result_count == 3
        job = await _until(runner.store, lost.job_id, JobState.FAILED)
        assert job.error == "interrupted by a restart of the box"
        assert (await _until(runner.store, waiting.job_id, JobState.SUCCEEDED)).result_count == 1
        await runner.stop()
        runner.store.close()

    asyncio.run(main())
