"""What a reload would take away from a running box, so that a file cut short, emptied or edited by mistake
is refused instead of applied (issue 16: a SIGHUP with a file cut before ``mqtt:`` made MQTT and every
instance disappear without an ERROR).

:func:`dangerous_changes` is pure: it compares the running site with the new one and lists, in words, each
removal of something the box had:

- ``sinks``: a reporting section (``mqtt``; later ``kafka``) present and enabled before, absent or disabled now.
  Undelivered outbox rows of that sink would wait for it, but nothing would deliver them;
- ``cameras``: every declared camera (IPC or NVR/ABOX channel);
- ``instances``: every AI instance;
- ``gb28181`` and ``api``: the section, present and enabled before, absent or disabled now.

The operator allows a removal with ``allow_removal: [KIND, ...]`` in the new file (or ``vcs-edge reload
--force``). The marker names what may go, so a file that is cut short after it still cannot drop the rest;
it is meant for one reload and then taken out. Removing some cameras or instances is an ordinary edit and
is not listed.
"""

from __future__ import annotations

from .enums import DeviceType
from .schema import RemovalKind, SiteFile

#: the reporting sections a box may have, each a sink of the outbox (kafka joins here, and RemovalKind)
SINK_SECTIONS: tuple[RemovalKind, ...] = ("mqtt",)
#: the other sections whose removal is guarded
_SERVICES: tuple[tuple[RemovalKind, str], ...] = (("gb28181", "GB/T 28181 registration"), ("api", "VCS API"))


def _enabled(site: SiteFile, section: str) -> bool:
    value = getattr(site, section, None)
    return value is not None and bool(getattr(value, "enabled", True))


def _cameras(site: SiteFile) -> int:
    return sum(len(d.channels) if d.type is not DeviceType.IPC else 1 for d in site.devices)


def removals(old: SiteFile, new: SiteFile) -> list[tuple[RemovalKind, str]]:
    """Every removal from ``old`` to ``new`` that needs the operator's word, allowed or not."""
    out: list[tuple[RemovalKind, str]] = []
    for section in SINK_SECTIONS:
        if _enabled(old, section) and not _enabled(new, section):
            out.append(
                (
                    section,
                    f"the {section!r} sink would be removed; its undelivered outbox entries would wait "
                    "with nothing to deliver them",
                )
            )
    before, after = _cameras(old), _cameras(new)
    if before and not after:
        out.append(("cameras", f"every camera would be removed (the box has {before})"))
    if old.instances and not new.instances:
        out.append(("instances", f"every AI instance would be removed (the box has {len(old.instances)})"))
    for kind, what in _SERVICES:
        if _enabled(old, kind) and not _enabled(new, kind):
            out.append((kind, f"the {kind!r} section ({what}) would be removed"))
    return out


def dangerous_changes(old: SiteFile, new: SiteFile) -> list[str]:
    """What a reload from ``old`` to ``new`` would remove that the new file does not allow (empty: safe).

    Each line ends with how to allow it, so the caller can log the lines as they are.
    """
    allowed = set(new.allow_removal)
    return [
        f"{text}; if that is meant, add allow_removal: [{kind}] to the file (or use vcs-edge reload --force)"
        for kind, text in removals(old, new)
        if kind not in allowed
    ]
