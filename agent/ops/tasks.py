"""Background tasks whose exceptions are always observed: a task made here is kept referenced until it ends, and
its failure is logged (and counted) instead of vanishing with the task object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("vcs_edge.tasks")

_running: set[asyncio.Task[Any]] = set()
failures = 0


def _done(task: asyncio.Task[Any]) -> None:
    global failures
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        failures += 1
        log.error("background task %s failed", task.get_name(), exc_info=exc)


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_done)
    return task
