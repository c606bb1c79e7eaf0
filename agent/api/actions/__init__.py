"""The actions of every product served (VCS, visual search, LinkVisual), one module per family; importing them registers their handlers in ``agent.api.dispatch``."""

from __future__ import annotations

from agent.api.dispatch import ACTIONS, Handler


def load_all() -> dict[tuple[str, str], Handler]:
    from . import (  # noqa: F401 - registers the handlers
        corps,
        datasources,
        devices,
        imagedb,
        instances,
        media,
        picture_jobs,
        record,
        targets,
        uploads,
        watch,
    )

    return ACTIONS
