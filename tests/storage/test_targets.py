"""Target records: stable ids, the SearchTarget field names, JSON round trip, clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from agent.analytics.targets import (
    TargetAttribute,
    TargetRecord,
    format_timestamp,
    make_target_id,
    parse_timestamp,
    target_id_time,
)
from tests.storage.conftest import T0, make_record

# The Records fields of SearchTarget in seed 002 (10.1), less TargetImageSimilarity (only with image search).
SEED_RECORD_FIELDS = {
    "TargetType",
    "Timestamp",
    "DeviceId",
    "TargetAttributes",
    "TargetImageUrl",
    "SourceImageUrl",
    "LeftTopX",
    "LeftTopY",
    "RightBottomX",
    "RightBottomY",
}


def test_target_id_is_a_pure_function_of_the_track_and_sorts_by_time() -> None:
    a = make_target_id("cam-1", "Face", T0, 7, "inst")
    assert a == make_target_id("cam-1", "Face", T0, 7, "inst")
    assert len(a) == 26 and a.isalnum()
    others = {
        make_target_id("cam-2", "Face", T0, 7, "inst"),
        make_target_id("cam-1", "Body", T0, 7, "inst"),
        make_target_id("cam-1", "Face", T0, 8, "inst"),
        make_target_id("cam-1", "Face", T0, 7, "other"),
        make_target_id("cam-1", "Face", T0 + timedelta(milliseconds=1), 7, "inst"),
    }
    assert a not in others and len(others) == 5
    later = [make_target_id("cam-1", "Face", T0 + timedelta(seconds=s), 0) for s in range(50)]
    assert later == sorted(later)
    assert target_id_time(a) == T0


def test_target_id_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="time zone"):
        make_target_id("cam", "Face", datetime(2024, 1, 1), 1)


def test_to_api_has_the_seed_fields_and_values() -> None:
    rec = make_record("34020000001320000001", 3)
    rec.target_image_path = "2024/05/01/cam/x.jpg"
    rec.source_image_path = "2024/05/01/cam/x-frame.jpg"
    api = rec.to_api(lambda p: f"http://box/media/{p}")
    assert set(api) >= SEED_RECORD_FIELDS
    assert api["TargetId"] == rec.target_id
    assert api["TargetType"] == "Face"
    assert api["Timestamp"] == "2024-05-01T12:00:03Z"
    assert api["DeviceId"] == "34020000001320000001"
    assert (api["LeftTopX"], api["LeftTopY"], api["RightBottomX"], api["RightBottomY"]) == (40, 20, 104, 84)
    assert api["TargetImageUrl"] == "http://box/media/2024/05/01/cam/x.jpg"
    assert api["SourceImageUrl"] == "http://box/media/2024/05/01/cam/x-frame.jpg"
    assert api["InstanceId"] == "inst-1" and api["AlgorithmId"] == "retinaface"
    attrs = json.loads(str(api["TargetAttributes"]))
    by_key = {a["Key"]: a for a in attrs}
    assert by_key["Score"]["Score"] == pytest.approx(0.9)
    assert by_key["Quality"]["Score"] == pytest.approx(0.8)
    assert len(json.loads(by_key["Landmarks"]["Value"])) == 5
    assert "TargetImageSimilarity" not in api
    assert rec.to_api(similarity=0.93456)["TargetImageSimilarity"] == 0.9346


def test_json_round_trip_keeps_everything_but_the_embedding() -> None:
    rec = make_record("cam", 1, target_type="Body", embedding=np.ones(4, np.float32))
    rec.attributes = (TargetAttribute("GenderCode", "1", 0.92),)
    back = TargetRecord.from_json(rec.to_json())
    assert back.embedding is None
    back.embedding = rec.embedding
    assert back == rec
    assert back.to_api() == rec.to_api()


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", '{"target_id": "x"}', "not json", '{"box": [1,2,3], "target_id":"a"}'],
)
def test_malformed_record_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed target record"):
        TargetRecord.from_json(text)


def test_bad_records_are_refused_with_clear_errors() -> None:
    good = make_record("cam", 1)
    with pytest.raises(ValueError, match="target type"):
        TargetRecord(good.target_id, "Cat", T0, "cam", 0, 0, 1, 1, 0.5)
    with pytest.raises(ValueError, match="box"):
        TargetRecord(good.target_id, "Face", T0, "cam", 10, 0, 5, 1, 0.5)
    with pytest.raises(ValueError, match="time zone"):
        TargetRecord(good.target_id, "Face", datetime(2024, 1, 1), "cam", 0, 0, 1, 1, 0.5)
    with pytest.raises(ValueError, match="device"):
        TargetRecord(good.target_id, "Face", T0, "", 0, 0, 1, 1, 0.5)
    with pytest.raises(ValueError, match="embedding"):
        TargetRecord(
            good.target_id, "Face", T0, "cam", 0, 0, 1, 1, 0.5, embedding=np.array([np.nan], np.float32)
        )


def test_timestamps_are_utc_in_the_api_form() -> None:
    cst = timezone(timedelta(hours=8))
    ts = datetime(2021, 9, 14, 20, 0, 0, tzinfo=cst)
    assert format_timestamp(ts) == "2021-09-14T12:00:00Z"
    assert parse_timestamp("2021-09-14T12:00:00Z") == datetime(2021, 9, 14, 12, tzinfo=UTC)
    assert parse_timestamp("2021-09-14T20:00:00+08:00") == datetime(2021, 9, 14, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("yesterday")
