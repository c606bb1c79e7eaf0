"""A small agent stand-in for crash tests: TargetStore + outbox + MQTT sink in one process, driven over stdin.

Run: ``python -m tests.storage.mqtt_driver --data-dir D --port P``. Prints one JSON object per line:
``{"ready": true}`` once started, then one answer per command:

- ``produce DEVICE COUNT FIRST`` -> ``{"produced": [TargetId, ...]}`` (track ids FIRST..FIRST+COUNT-1)
- ``pending`` -> ``{"pending": N}`` (undelivered outbox entries)
- ``stop`` -> graceful stop (``offline`` status), ``{"stopped": true}``

The test kills it with SIGKILL to check that nothing in the outbox is lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import cv2

from agent.reporting.mqtt import MqttSettings, MqttSink
from agent.reporting.sinks import SinkRunner
from agent.samples import group_photo
from agent.storage.store import TargetStore
from tests.storage.conftest import make_record


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--site", default="crash")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    img = cv2.imread(str(group_photo()))
    if img is None:
        raise SystemExit("cannot read the sample photo")
    small = cv2.resize(img, (320, 240))
    frame = cv2.imencode(".jpg", small)[1].tobytes()
    crop = cv2.imencode(".jpg", small[20:84, 40:104])[1].tobytes()

    store = TargetStore(args.data_dir, sinks=("mqtt",))
    sink = MqttSink(
        MqttSettings(port=args.port, site=args.site, max_inflight=10, reconnect_min_s=1, reconnect_max_s=1)
    )
    runner = SinkRunner(store.outbox, sink)
    runner.start()
    say({"ready": True})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "produce":
            device, count, first = cmd[1], int(cmd[2]), int(cmd[3])
            ids = []
            for n in range(first, first + count):
                rec = make_record(device, n)
                store.add(rec, crop, frame)
                ids.append(rec.target_id)
            say({"produced": ids})
        elif cmd[0] == "pending":
            say({"pending": store.outbox.count()})
        elif cmd[0] == "stop":
            runner.stop()
            store.close()
            say({"stopped": True})
            return


if __name__ == "__main__":
    main()
