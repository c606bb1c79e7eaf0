"""Start-up: load what the API created (``state.py``) and re-apply it to the running Supervisor.

The site file wins: an API-created device or instance whose id the file now declares is skipped with a
warning (the file's object runs instead), so a file edited to adopt an object never runs it twice.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from agent import config as cfgmod
from agent.config.enums import StreamMode

from .context import ApiContext, Corp, InstanceMeta, PicSource, device_from_json

log = logging.getLogger("vcs_edge.api")


async def restore(ctx: ApiContext) -> None:
    st = ctx.state
    for cid, body in st.load("corp"):
        ctx.corps[cid] = Corp.from_json(body)
    for sid, body in st.load("datasource"):
        ctx.pic_sources[sid] = PicSource.from_json(body)
    registry = ctx.box.registry
    devices = 0
    for did, body in st.load("device"):
        try:
            dev, extra = device_from_json(body, ctx.site.streams)
        except (KeyError, ValueError, TypeError) as exc:
            log.error("API state: device %s cannot be restored (%s); skipped", did, exc)
            continue
        if did in registry:
            log.warning(
                "API state: device %s is now declared in the site file; the file's definition is used", did
            )
            continue
        ctx.extras[did] = extra
        await ctx.box.add_device(dev)
        devices += 1
    for did, body in st.load("stream_mode"):
        mode = StreamMode(int(body.get("mode", 0)))
        ctx.stream_modes[did] = int(mode)
        known = registry.get(did)
        if known is not None and known.stream is not None and known.stream.mode != mode:
            ctx.box.set_stream_mode(did, mode)
    for did, body in st.load("storage"):
        ctx.storage[did] = {k: int(v) for k, v in body.items()}
    instances = 0
    for iid, body in st.load("instance"):
        try:
            cfg = cfgmod.InstanceConfig.model_validate(body["config"])
            meta = InstanceMeta.from_json(body["meta"])
        except (KeyError, ValidationError, TypeError) as exc:
            log.error("API state: instance %s cannot be restored (%s); skipped", iid, exc)
            continue
        if iid in ctx.box.runners:
            log.warning(
                "API state: instance %s is now declared in the site file; the file's definition is used", iid
            )
            continue
        ctx.api_instances[iid] = cfg
        ctx.instance_meta[iid] = meta
        await ctx.box.add_instance(cfg)
        instances += 1
    log.info(
        "API state restored", extra={"corps": len(ctx.corps), "devices": devices, "instances": instances}
    )
