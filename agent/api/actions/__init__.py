"""The VCS actions, one module per family; importing them registers their handlers in ``agent.api.dispatch``."""

from __future__ import annotations

from agent.api.dispatch import ACTIONS, Handler


def load_all() -> dict[str, Handler]:
    from . import corps, datasources, devices, instances, media, record, targets  # noqa: F401 - registers the handlers

    return ACTIONS
