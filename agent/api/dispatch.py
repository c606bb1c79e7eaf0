"""Action handlers by name. Each takes the context and the request parameters and returns the response body
(without RequestId); problems are raised as :class:`agent.api.errors.ApiError`. The handlers live in
``agent.api.actions`` and register here with :func:`action`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .context import ApiContext
from .params import Params

Handler = Callable[[ApiContext, Params], Awaitable[dict[str, Any]]]

ACTIONS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ACTIONS[name] = fn
        return fn

    return register


def paged(total: int, size: int) -> int:
    return (total + size - 1) // size if size else 0
