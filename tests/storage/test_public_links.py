"""Every link the box hands out starts with agent.public_url and lasts agent.link_ttl_s (restructure defect 5),
and a link's signature is bound to its route (hardening). A real Supervisor with a real Mosquitto: a stored target
goes through the outbox to the broker, and the message's links are the ones upstream can use."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from agent import config as cfgmod
from agent.box.supervisor import Supervisor
from agent.storage.links import LinkSigner, load_or_create_key
from tests.storage.conftest import Jpegs, Mosquitto, Subscriber, free_port, make_record

PUBLIC = "http://127.0.0.2:18443/box1"  # stands for the address upstream reaches the box on (never dialled)


def test_mqtt_links_use_public_url_and_link_ttl(tmp_path: Path, jpegs: Jpegs) -> None:
    broker = Mosquitto(tmp_path, free_port())
    broker.start()
    sub = Subscriber(broker.port, "vcs-edge/links/targets/#", client_id="links-subscriber")
    site = cfgmod.load_text(
        f"""
site: {{name: links, timezone: UTC}}
agent:
  data_dir: {tmp_path / "data"}
  http: {{host: 127.0.0.1, port: 0}}
  public_url: "{PUBLIC}"
  link_ttl_s: 1234
detection: {{face: {{enabled: false}}, body: {{enabled: false}}}}
mqtt: {{host: 127.0.0.1, port: {broker.port}}}
"""
    )

    async def main() -> None:
        sup = Supervisor(site=site)
        await sup.start()
        try:
            rec = make_record("34020000001320000001", 1)
            await asyncio.to_thread(sup.store.add_many, jpegs.frame, [(rec, jpegs.crop)])
            assert await asyncio.to_thread(sub.wait_for, lambda msgs: len(msgs) >= 1, 30)
        finally:
            await sup.stop()

    before = time.time()
    try:
        asyncio.run(main())
        _topic, payload, _ = sub.messages[0]
        msg = json.loads(payload)
        for key in ("TargetImageUrl", "SourceImageUrl"):
            url = msg[key]
            assert url.startswith(PUBLIC + "/media/"), url
            expires = int(parse_qs(urlsplit(url).query)["e"][0])
            assert before + 1234 - 5 <= expires <= time.time() + 1234 + 5
    finally:
        sub.close()
        broker.stop()


@pytest.mark.parametrize(("made_for", "used_on"), [("media", "live"), ("live", "media")])
def test_a_signature_is_bound_to_its_route(tmp_path: Path, made_for: str, used_on: str) -> None:
    signer = LinkSigner(load_or_create_key(tmp_path))
    q = parse_qs(signer.sign(made_for, "abc/def.jpg", 60))
    e, s = q["e"][0], q["s"][0]
    assert signer.verify(made_for, "abc/def.jpg", e, s)
    assert not signer.verify(used_on, "abc/def.jpg", e, s)
    with pytest.raises(ValueError, match="not a link route"):
        signer.sign("snapshots", "abc/def.jpg", 60)
