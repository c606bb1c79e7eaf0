"""Motor targets reach the store: the agent with its default body/vehicle model (NanoDet) on real footage.

vtest.avi (re-encoded to H.264 by ``pipelines.samples``) has a van and a car parked at the top right in every
frame, and people walking. It plays as a file camera in real time into a ``body`` instance at Spf=1; when the
agent stops, the open tracks are stored: Body targets with their COCO class, Motor targets with their vehicle
class, in the record's TargetAttributes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent import samples
from agent.box.supervisor import Supervisor
from agent.config import load_text
from agent.storage.store import TargetStore

CAM = "34020000001320000010"


def test_body_instance_stores_people_and_vehicles_with_attributes(tmp_path: Path) -> None:
    clip = samples.h264_clip()
    site = load_text(
        f"""
site: {{name: street, timezone: UTC}}
agent: {{data_dir: "{tmp_path / "data"}", http: {{host: 127.0.0.1, port: 0}}}}
streams: {{mode: 1}}
devices:
  - {{id: "{CAM}", name: street, frame_rate: 10, gop: 20, stream: {{main: "{clip}"}}}}
detection:
  face: {{enabled: false}}
  track_max_missed_s: 30
instances:
  - {{id: street, name: street, algorithm_id: body, spf: 1, cameras: ["{CAM}"]}}
""",
        "street.yaml",
        {},
    )
    assert site.detection.body.model == "nanodet"  # the default

    async def run() -> None:
        sup = Supervisor(site=site)
        await sup.start()
        for _ in range(300):
            await asyncio.sleep(0.1)
            if sup.analytics is not None and sup.analytics.frames_detected >= 3:
                break
        await sup.stop()  # tracks still open are stored

    asyncio.run(run())
    store = TargetStore(site.agent.data_dir, sinks=())
    try:
        motors = store.search(target_type="Motor", page_size=20).hits
        bodies = store.search(target_type="Body", page_size=50).hits
        assert len(motors) >= 1 and len(bodies) >= 3
        for hit in motors:
            attrs = {a.key: a.value for a in hit.record.attributes}
            assert attrs["VehicleClass"] in {"car", "truck", "bus", "motorcycle"}
            assert (
                hit.record.right_bottom_x > 600 and hit.record.left_top_y < 120
            )  # top right, where they park
            api = json.loads(hit.record.to_api()["TargetAttributes"])
            assert {"Key": "VehicleClass", "Value": attrs["VehicleClass"]} in api
        for hit in bodies:
            attrs = {a.key: a.value for a in hit.record.attributes}
            assert attrs["CocoClass"] == "person" and "VehicleClass" not in attrs
    finally:
        store.close()
