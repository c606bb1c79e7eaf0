"""Watch policies, items and tasks through the official SDK against a running agent: every action, its limits
and errors, the Password never returned, and the state kept across a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_vcs20200515 import models as m

from tests.api.conftest import SITE_IPC, Agent, make_agent, sdk_client

from .faces import data_url, item_photo

RECEIVER = {
    "MessageQueue": "Kafka",
    "Config": {
        "BootstrapServers": "127.0.0.1:9092,127.0.0.2:9092",
        "Topic": "topic_for_put_message",
        "Authorization": "SASL",
        "SASL": {"Type": "SCRAM", "Username": "watcher", "Password": "pw-not-to-be-seen"},
    },
}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = make_agent(tmp_path)
    try:
        yield a
    finally:
        a.close()


def err(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_policies_items_tasks(agent: Agent) -> None:
    c = sdk_client(agent)
    pid = c.create_watch_policy(
        m.CreateWatchPolicyRequest(
            watch_policy_name="vip_list",
            watch_mode="NotifyIfInList",
            target_type="Face",
            item_match_type="ByImage",
            similarity_threshold=0.6,
        )
    ).body.data.watch_policy_id
    assert len(pid) == 32
    pol = c.describe_watch_policies(m.DescribeWatchPoliciesRequest(page_number=1, page_size=10)).body.data
    assert pol.total_count == 1
    rec = pol.records[0]
    assert (rec.watch_policy_name, rec.watch_mode, rec.target_type, rec.item_match_type) == (
        "vip_list",
        "NotifyIfInList",
        "Face",
        "ByImage",
    )
    assert rec.similarity_threshold == 0.6
    c.update_watch_policy(m.UpdateWatchPolicyRequest(watch_policy_id=pid, watch_mode="NotifyAnyway"))
    got = c.describe_watch_policies(
        m.DescribeWatchPoliciesRequest(page_number=1, page_size=10, watch_policy_ids=json.dumps([pid]))
    ).body.data.records[0]
    assert got.watch_mode == "NotifyAnyway" and got.similarity_threshold == 0.6

    # errors name the parameter and what is allowed
    e = err(
        lambda: c.create_watch_policy(
            m.CreateWatchPolicyRequest(watch_mode="Sometimes", target_type="Face", item_match_type="ByImage")
        )
    )
    assert "WatchMode" in e.message and "NotifyIfInList" in e.message
    e = err(
        lambda: c.create_watch_policy(
            m.CreateWatchPolicyRequest(
                watch_mode="NotifyIfInList",
                target_type="Face",
                item_match_type="ByImage",
                similarity_threshold=1.0,
            )
        )
    )
    assert "SimilarityThreshold" in e.message
    e = err(
        lambda: c.create_watch_policy(
            m.CreateWatchPolicyRequest(
                watch_mode="NotifyIfInList", target_type="Cat", item_match_type="ByImage"
            )
        )
    )
    assert "TargetType" in e.message
    e = err(lambda: c.describe_watch_policies(m.DescribeWatchPoliciesRequest(page_number=1, page_size=101)))
    assert "PageSize" in e.message

    # items: a face by picture (data: URL), attributes, a URL the box will not fetch
    items = [
        m.AddWatchItemsRequestWatchItemList(
            watch_item_id="p1", watch_item_name="alice", item_image_url=data_url(item_photo(0))
        ),
        m.AddWatchItemsRequestWatchItemList(
            watch_item_id="a1",
            watch_item_name="men",
            item_attributes=json.dumps([{"Key": "GenderCode", "Value": ["1"]}]),
        ),
    ]
    added = c.add_watch_items(m.AddWatchItemsRequest(watch_policy_id=pid, watch_item_list=items)).body.data
    assert json.loads(added.added_item_ids) == ["p1", "a1"] and json.loads(added.failed_item_ids) == []
    e = err(
        lambda: c.add_watch_items(
            m.AddWatchItemsRequest(
                watch_policy_id=pid,
                watch_item_list=[
                    m.AddWatchItemsRequestWatchItemList(item_image_url="http://example.invalid/a.jpg")
                ],
            )
        )
    )
    assert "ItemImageUrl" in e.message and "data:image" in e.message
    e = err(
        lambda: c.add_watch_items(
            m.AddWatchItemsRequest(
                watch_policy_id=pid,
                watch_item_list=[
                    m.AddWatchItemsRequestWatchItemList(item_attributes='[{"Key":"Hat","Value":["1"]}]')
                ],
            )
        )
    )
    assert "ItemAttributes[0].Key" in e.message and "GenderCode" in e.message
    its = c.describe_watch_items(
        m.DescribeWatchItemsRequest(page_number=1, page_size=10, watch_policy_id=pid)
    ).body.data
    assert its.total_count == 2
    by_id = {r.watch_item_id: r for r in its.records}
    assert by_id["p1"].item_image_url.startswith("http://127.0.0.1:") and by_id["p1"].item_attributes == ""
    assert json.loads(by_id["a1"].item_attributes) == [{"Key": "GenderCode", "Value": ["1"]}]

    # tasks: schedule rules, receiver, devices
    def task(**kw: Any) -> Any:
        base = dict(
            task_name="gate",
            device_list=json.dumps([SITE_IPC]),
            schedule_type="EVERYDAY",
            schedule_times=json.dumps([{"StartTime": "08:00:00", "EndTime": "12:00:00"}]),
            watch_policy_ids=json.dumps([pid]),
            message_receiver=json.dumps(RECEIVER),
            description="front_gate",
        )
        base.update(kw)
        return c.create_watch_task(m.CreateWatchTaskRequest(**base))

    tid = task().body.data.watch_task_id
    e = err(
        lambda: task(
            schedule_times=json.dumps(
                [
                    {"StartTime": "08:00:00", "EndTime": "12:00:00"},
                    {"StartTime": "11:00:00", "EndTime": "13:00:00"},
                ]
            )
        )
    )
    assert "ScheduleTimes" in e.message and "overlap" in e.message
    e = err(lambda: task(schedule_type="EVERY_WEEK"))
    assert "ScheduleCycleDates" in e.message
    e = err(lambda: task(device_list='["nope"]'))
    assert "DeviceList" in e.message
    e = err(lambda: task(watch_policy_ids='["nope"]'))
    assert "WatchPolicyIds" in e.message
    bad = json.loads(json.dumps(RECEIVER))
    bad["Config"]["SASL"]["Type"] = "KERBEROS"
    e = err(lambda: task(message_receiver=json.dumps(bad)))
    assert "SASL.Type" in e.message and "PLAIN" in e.message
    tasks = c.describe_watch_tasks(m.DescribeWatchTasksRequest(page_number=1, page_size=10)).body.data
    assert tasks.total_count == 1
    t = tasks.records[0]
    assert (
        t.watch_task_id == tid and json.loads(t.device_list) == [SITE_IPC] and t.schedule_type == "EVERYDAY"
    )
    assert json.loads(t.schedule_times) == [{"StartTime": "08:00:00", "EndTime": "12:00:00"}]
    receiver = json.loads(t.message_receiver)
    assert receiver["Config"]["SASL"] == {
        "Type": "SCRAM",
        "Username": "watcher",
    }  # no Password, as the seed says
    assert "pw-not-to-be-seen" not in json.dumps(tasks.to_map())
    c.update_watch_task(
        m.UpdateWatchTaskRequest(
            watch_task_id=tid, schedule_type="LONG_RUNNING", schedule_times="[]", device_list="ALL"
        )
    )
    t = c.describe_watch_tasks(m.DescribeWatchTasksRequest(page_number=1, page_size=10)).body.data.records[0]
    assert t.schedule_type == "LONG_RUNNING" and json.loads(t.device_list) == ["ALL"]

    # everything survives a restart
    agent.restart()
    c = sdk_client(agent)
    assert (
        c.describe_watch_tasks(m.DescribeWatchTasksRequest(page_number=1, page_size=10)).body.data.total_count
        == 1
    )
    its = c.describe_watch_items(
        m.DescribeWatchItemsRequest(page_number=1, page_size=10, watch_policy_id=pid)
    ).body.data
    assert its.total_count == 2

    removed = c.remove_watch_items(
        m.RemoveWatchItemsRequest(watch_policy_id=pid, watch_item_ids=json.dumps(["p1", "gone"]))
    ).body.data
    assert json.loads(removed.deleted_item_ids) == ["p1", "gone"]
    assert (
        c.describe_watch_items(
            m.DescribeWatchItemsRequest(page_number=1, page_size=10, watch_policy_id=pid)
        ).body.data.total_count
        == 1
    )
    c.delete_watch_tasks(m.DeleteWatchTasksRequest(watch_task_ids=json.dumps([tid])))
    c.delete_watch_policies(m.DeleteWatchPoliciesRequest(watch_policy_ids=json.dumps([pid])))
    assert (
        c.describe_watch_tasks(m.DescribeWatchTasksRequest(page_number=1, page_size=10)).body.data.total_count
        == 0
    )
    assert (
        c.describe_watch_policies(
            m.DescribeWatchPoliciesRequest(page_number=1, page_size=10)
        ).body.data.total_count
        == 0
    )


def test_retroactive_check_over_stored_faces(agent: Agent) -> None:
    """AddWatchItems with RetroactiveHours (a signed call with the extra parameter, as `vcs-edge ctl` sends it)
    searches the stored faces with the new item's picture: person 0 is found, the other five are not."""
    import cv2
    import numpy as np

    from agent.analytics.targets import TargetRecord, make_target_id
    from agent.api import ctl
    from tests.api.conftest import KEY_ID, SECRET

    from .faces import face_boxes, scene

    embed = agent.sup.embedder
    assert embed is not None and agent.store is not None
    now = datetime.now(UTC)
    stored = []
    for i, (x1, y1, x2, y2) in enumerate(face_boxes()):
        w, h = x2 - x1, y2 - y1
        crop = scene()[max(0, y1 - h) : y2 + h, max(0, x1 - w) : x2 + w]
        ok, jpg = cv2.imencode(".jpg", crop)
        assert ok
        emb = embed(jpg.tobytes(), "Face").vector  # a QueryVector: the largest face's
        assert emb is not None
        rec = TargetRecord(
            target_id=make_target_id(SITE_IPC, "Face", now - timedelta(minutes=5), i),
            target_type="Face",
            timestamp=now - timedelta(minutes=5),
            device_id=SITE_IPC,
            left_top_x=x1,
            left_top_y=y1,
            right_bottom_x=x2,
            right_bottom_y=y2,
            score=0.9,
            embedding=np.asarray(emb, np.float32),
        )
        assert agent.store.add(rec, jpg.tobytes())
        stored.append(rec.target_id)
    c = sdk_client(agent)
    pid = c.create_watch_policy(
        m.CreateWatchPolicyRequest(watch_mode="NotifyIfInList", target_type="Face", item_match_type="ByImage")
    ).body.data.watch_policy_id
    items = json.dumps([{"WatchItemId": "p0", "ItemImageUrl": data_url(item_photo(0))}])
    status, body = ctl.call(
        agent.endpoint,
        KEY_ID,
        SECRET,
        "AddWatchItems",
        {"WatchPolicyId": pid, "WatchItemList": items, "RetroactiveHours": "1"},
    )
    assert status == 200, body
    data = json.loads(body)["Data"]
    hits = data["RetroactiveMatches"]
    assert [h["TargetId"] for h in hits] == [stored[0]], hits
    assert hits[0]["WatchItemId"] == "p0" and hits[0]["Similarity"] >= 0.5
    status, body = ctl.call(
        agent.endpoint,
        KEY_ID,
        SECRET,
        "AddWatchItems",
        {"WatchPolicyId": pid, "WatchItemList": items, "RetroactiveHours": "0"},
    )
    assert status == 400 and b"RetroactiveHours" in body
