"""Acceptance of the GB/T 28181 access server: a camera is created with CreateDevice (InProtocol GBT28181)
through the official SDK; a second agent process plays the camera (the wave-1 device side, registering into the
box under test with the ServerId/ServerPort/DeviceId/Password that CreateDevice answered, serving the sample
clip as PS/RTP). The box under test takes it online, reads its catalog, pulls its PS stream through the same
stream manager as RTSP cameras (a snapshot decoded by PyAV, an AI instance's targets from the real body
detector, GetDeviceLiveUrl playing frame by frame), and when
the camera process is killed takes it offline within HeartBeatInterval x HeartBeatCount plus a few seconds;
a restarted camera comes back without touching the box.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples
from tests.peers import wait_until

from .conftest import Agent, free_port, sdk_client, site_yaml

HB = 5  # HeartBeatInterval (the device side's minimum) and HeartBeatCount 2: offline within 10 s
CAM_CHANNEL = "34020000001320000555"  # the camera agent's own camera: its catalog channel
CAM_PASSWORD_ENV = "GB28181_PASSWORD"

pytestmark = pytest.mark.peer


def camera_yaml(
    data_dir: Path, clip: str, server_id: str, port: int, device_id: str, cams: dict[str, str] | None = None
) -> str:
    cams = cams or {CAM_CHANNEL: "东门摄像机"}
    devices = "".join(
        f'  - {{id: "{cid}", name: {name}, stream: {{main: "file://{clip}"}}}}\n'
        for cid, name in cams.items()
    )
    return f"""
site: {{name: camera, timezone: UTC, gb_prefix: "3402000000"}}
agent:
  data_dir: {data_dir}
  http: {{host: 127.0.0.1, port: 0}}
  stop_timeout_s: 3
streams: {{mode: 0, idle_timeout_s: 2}}
devices:
{devices}instances: []
gb28181:
  server_id: "{server_id}"
  server_host: 127.0.0.1
  server_port: {port}
  device_id: "{device_id}"
  password: ${{{CAM_PASSWORD_ENV}}}
  heartbeat_interval_s: {HB}
  heartbeat_count: 2
  register_backoff_s: 1
  local_ip: 127.0.0.1
  local_sip_port: 0
  rtp_port_min: 45000
  rtp_port_max: 45999
"""


class CameraProcess:
    def __init__(self, workdir: Path, yaml: str, password: str, module: str = "agent.cli") -> None:
        self.module = module
        workdir.mkdir(parents=True, exist_ok=True)
        self.site = workdir / "camera.yaml"
        self.site.write_text(yaml)
        self.log = workdir / "camera.log"
        self.workdir = workdir
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, **{CAM_PASSWORD_ENV: self.password})
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "run", "-c", str(self.site), "--log-format", "text"],
                cwd=Path(__file__).resolve().parents[2],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """Power off: no unregister, no BYE."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def status(client: Any, device_id: str) -> str:
    data = client.describe_ipcs(
        m.DescribeIpcsRequest(page_num=1, page_size=50, device_id_list=device_id)
    ).body.data
    return str(data.records[0].device_status) if data.records else ""


def test_a_gb28181_camera_created_through_the_sdk_registers_streams_and_goes_offline(tmp_path: Path) -> None:
    clip = samples.h264_clip()
    sip_port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(
        site_yaml(data)
        + f"""
gb28181_server:
  local_ip: 127.0.0.1
  sip_port: {sip_port}
  heartbeat_interval_s: {HB}
  heartbeat_count: 2
  rtp_port_min: 46000
  rtp_port_max: 46999
detection: {{report_first_sighting: true}}
"""
    )
    box = Agent(site, data, gb_access={"server_ip": "127.0.0.1", "server_port": sip_port}).start()
    camera: CameraProcess | None = None
    try:
        client = sdk_client(box)
        corp = client.create_corp(m.CreateCorpRequest(corp_name="east gate", app_name="guard")).body.corp_id
        made = client.create_device(
            m.CreateDeviceRequest(
                corp_id=corp,
                device_type="IPC",
                data_source_type="VIDEO",
                device_name="east gate",
                device_address="gate 1",
                in_protocol="GBT28181",
            )
        ).body.data
        assert made.server_port == str(sip_port) and made.server_ip == "127.0.0.1"
        assert status(client, made.device_id) == "2"  # pending until it registers

        yaml = camera_yaml(tmp_path / "cam" / "data", str(clip), made.server_id, sip_port, made.device_id)
        camera = CameraProcess(tmp_path / "cam", yaml, made.password)
        camera.start()
        assert wait_until(lambda: status(client, made.device_id) == "1", 60), camera.log.read_text()[-3000:]

        # its catalog made it a pulled camera fed by the GB/T 28181 session
        def stream_url() -> str:
            dev = box.call(box.sup.registry.get, made.device_id)
            return dev.stream.url if dev is not None and dev.stream is not None else ""

        assert wait_until(lambda: stream_url() == f"gb28181://{made.device_id}/{CAM_CHANNEL}", 20)
        # a snapshot: INVITE on demand, PS/RTP demuxed to access units, decoded by PyAV in the stream source
        frame = box.run(box.sup.snapshot(made.device_id, 30.0), 40)
        assert frame is not None
        with av.open(str(clip)) as inp:
            vs = inp.streams.video[0]
            assert frame.image.shape == (vs.codec_context.height, vs.codec_context.width, 3)
        stats = box.call(lambda: box.sup.streams.stats(made.device_id))
        assert stats["codec"] == "h264" and stats["packets"] > 0

        # an AI instance on it produces targets from its PS stream with the real body detector
        iid = client.create_aiinstance(
            m.CreateAIInstanceRequest(
                instance_name="gb bodies",
                project_id=corp,
                algorithm_id="body",
                algorithm_name="bodies",
                compute_type="StreamCompute",
                data_source="Camera",
                data_type="Picture",
                instance_type="Normal",
                schedule_type="LONG_RUNNING",
                spf=1,
            )
        ).body.data.instance_id
        client.add_camera_for_instance(
            m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[made.device_id])
        )
        assert wait_until(lambda: box.call(lambda: box.sup.targets_stored) > 0, 120), box.call(
            lambda: box.sup.health()
        )

        # GetDeviceLiveUrl plays it (HLS remuxed from the PS session, decoded frame by frame)
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            body = client.get_device_live_url(m.GetDeviceLiveUrlRequest(device_id=made.device_id)).body
            if body.code == "200":
                url = str(body.url)
            else:
                assert body.code == "Retry", (body.code, body.message)  # while the on-demand stream starts
                time.sleep(0.5)
        assert url
        sizes = []
        with av.open(url, timeout=15) as hls:
            for f in hls.decode(video=0):
                sizes.append((f.width, f.height))
                if len(sizes) >= 20:
                    break
        assert len(sizes) == 20 and sizes[0] == (frame.image.shape[1], frame.image.shape[0])

        # power off: offline within HeartBeatInterval x HeartBeatCount + a few s; power on: back online
        camera.kill()
        off_start = time.monotonic()
        assert wait_until(lambda: status(client, made.device_id) == "0", 2 * HB + 5)
        assert time.monotonic() - off_start <= 2 * HB + 5
        camera.start()
        assert wait_until(lambda: status(client, made.device_id) == "1", 60), camera.log.read_text()[-3000:]
        health = box.call(lambda: box.sup.service("gb28181_server").health())
        assert made.device_id in health["devices_online"] and health["refused"]["bad_credentials"] == 0

        # the box restarts: the camera keeps its gb28181:// stream, is offline until it registers again
        camera.kill()
        box.restart()
        client = sdk_client(box)
        assert stream_url() == f"gb28181://{made.device_id}/{CAM_CHANNEL}"
        assert status(client, made.device_id) == "0"
        camera.start()
        assert wait_until(lambda: status(client, made.device_id) == "1", 60), camera.log.read_text()[-3000:]
    finally:
        if camera is not None:
            camera.stop()
        box.close()


def test_an_nvr_with_quirks_created_through_the_sdk(tmp_path: Path) -> None:
    """A second agent process as an NVR in the test-only quirks mode (its own SSRC, a split catalog, UTF-8
    under a GB2312 declaration): its channels, the SubDeviceIds CreateDevice answered, go online and stream
    through the box, and no extra channel appears."""
    clip = samples.h264_clip()
    sip_port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(
        site_yaml(data)
        + f"""
gb28181_server: {{local_ip: 127.0.0.1, sip_port: {sip_port}, heartbeat_interval_s: {HB}, heartbeat_count: 2,
  rtp_port_min: 46000, rtp_port_max: 46999}}
"""
    )
    box = Agent(site, data, gb_access={"server_ip": "127.0.0.1", "server_port": sip_port}).start()
    camera: CameraProcess | None = None
    try:
        client = sdk_client(box)
        corp = client.create_corp(m.CreateCorpRequest(corp_name="yard", app_name="guard")).body.corp_id
        made = client.create_device(
            m.CreateDeviceRequest(
                corp_id=corp,
                device_type="NVR",
                data_source_type="VIDEO",
                device_name="yard nvr",
                device_address="yard",
                sub_device_count=3,
                in_protocol="GBT28181",
            )
        ).body.data
        chans = [s.sub_device_id for s in made.sub_device_info]
        names = {c: f"院子通道{i + 1}" for i, c in enumerate(chans)}
        yaml = camera_yaml(
            tmp_path / "nvr" / "data", str(clip), made.server_id, sip_port, made.device_id, names
        )
        camera = CameraProcess(tmp_path / "nvr", yaml, made.password, module="tests.gb28181.quirky_camera")
        camera.start()

        def nvr_status() -> str:
            recs = client.describe_nvrs(
                m.DescribeNvrsRequest(page_num=1, page_size=10, corp_id_list=corp)
            ).body.data.records
            return str(recs[0].device_status) if recs else ""

        assert wait_until(lambda: nvr_status() == "1", 60), camera.log.read_text()[-3000:]

        def ready() -> bool:
            recs = client.describe_ipcs(
                m.DescribeIpcsRequest(page_num=1, page_size=50, nvr_id_list=made.device_id)
            ).body.data.records
            got = {r.device_id: r for r in recs}
            return set(got) == set(chans) and all(str(r.device_status) == "1" for r in got.values())

        assert wait_until(ready, 30)
        nvr = client.describe_nvrs(
            m.DescribeNvrsRequest(page_num=1, page_size=10, corp_id_list=corp)
        ).body.data
        assert [s.sub_device_id for s in nvr.records[0].sub_device_info] == chans  # no extra channels

        def streams() -> list[str]:
            devs = [box.call(box.sup.registry.get, c) for c in chans]
            return [d.stream.url if d is not None and d.stream is not None else "" for d in devs]

        assert wait_until(lambda: all(streams()), 30), (streams(), box.call(lambda: box.sup.health()))
        frame = box.run(box.sup.snapshot(chans[1], 30.0), 40)
        assert frame is not None and frame.image.size > 0
        log = camera.log.read_text()
        assert "quirk: answers and sends with its own SSRC" in log
        assert "quirk: catalog split over several MESSAGEs" in log
        assert "quirk: UTF-8 body under a GB2312 declaration" in log
        # the split catalog was reassembled whole (CreateDevice's channels keep the names the API gave them;
        # names through the UTF-8 quirk are checked in tests/test_gb_downstream_agent.py)
        srv = box.call(lambda: box.sup.service("gb28181_server").service.server)
        assert srv.catalogs.complete >= 1 and srv.catalogs.partial == 0
    finally:
        if camera is not None:
            camera.stop()
        box.close()
