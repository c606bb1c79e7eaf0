"""Signature, replay and format checks through the official SDKs and raw signed requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from alibabacloud_vcs20200515 import models

from agent.api import signature

from .conftest import KEY_ID, SECRET, Agent, sdk_client


def raw_call(
    agent: Agent,
    params: dict[str, str],
    *,
    secret: str = SECRET,
    ts: datetime | None = None,
    nonce: str | None = None,
    fmt: str = "JSON",
) -> tuple[int, bytes]:
    query = signature.common_params(params.pop("Action"), KEY_ID, fmt=fmt)
    if ts is not None:
        query["Timestamp"] = signature.format_timestamp(ts)
    if nonce is not None:
        query["SignatureNonce"] = nonce
    query["Signature"] = signature.sign("POST", {**query, **params}, secret)
    req = urllib.request.Request(
        f"{agent.endpoint}/?{urlencode(query)}", data=urlencode(params).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_signature_matches_aliyun_core() -> None:
    """Our string-to-sign and signature equal aliyunsdkcore's for the same parameters (spaces, CJK, * and ~)."""
    from urllib.parse import parse_qsl

    from aliyunsdkcore.auth.composer import rpc_signature_composer as composer

    body = {"PageNum": "1", "DeviceFilter": "门口 a*b~c", "DeviceIdList": "a,b"}
    url, to_sign = composer.get_signed_url({"Action": "DescribeIpcs"}, "k", "secret", "JSON", "POST", body)
    query = dict(parse_qsl(url[2:], keep_blank_values=True))
    params = {**query, **body}
    assert signature.string_to_sign("POST", params) == to_sign
    assert signature.sign("POST", params, "secret") == query["Signature"]


def _sdk_error(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_wrong_secret_is_signature_does_not_match(agent: Agent) -> None:
    bad = sdk_client(agent, secret="not-the-secret")
    err = _sdk_error(lambda: bad.describe_ipcs(models.DescribeIpcsRequest(page_num=1, page_size=10)))
    assert err.code == "SignatureDoesNotMatch"
    assert "server string to sign is:" in err.message


def test_unknown_key(agent: Agent) -> None:
    bad = sdk_client(agent, key_id="nobody")
    err = _sdk_error(lambda: bad.list_corps(models.ListCorpsRequest(page_number=1, page_size=10)))
    assert err.code == "InvalidAccessKeyId.NotFound"


def test_old_sdk_wrong_secret(agent: Agent) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkvcs.request.v20200515.ListCorpsRequest import ListCorpsRequest

    cl = AcsClient(KEY_ID, "not-the-secret", "cn-shanghai")
    req = ListCorpsRequest()
    req.set_endpoint(f"127.0.0.1:{agent.port}")
    req.set_protocol_type("http")
    req.set_PageNumber(1)
    req.set_PageSize(10)
    with pytest.raises(ServerException) as info:
        cl.do_action_with_exception(req)
    # aliyunsdkcore reads the server's string-to-sign out of the SignatureDoesNotMatch Message; when it equals
    # its own, only the secret can be wrong and it reports InvalidAccessKeySecret: both sides canonicalised alike
    assert info.value.get_error_code() == "InvalidAccessKeySecret"


def test_replayed_nonce_refused(agent: Agent) -> None:
    first = raw_call(
        agent, {"Action": "ListCorps", "PageNumber": "1", "PageSize": "5"}, nonce="fixed-nonce-1"
    )
    assert first[0] == 200, first
    again = raw_call(
        agent, {"Action": "ListCorps", "PageNumber": "1", "PageSize": "5"}, nonce="fixed-nonce-1"
    )
    assert again[0] == 400
    body = json.loads(again[1])
    assert body["Code"] == "SignatureNonceUsed" and body["RequestId"]


def test_stale_and_future_timestamps_refused(agent: Agent) -> None:
    for delta in (timedelta(minutes=-16), timedelta(minutes=16)):
        status, raw = raw_call(
            agent, {"Action": "ListCorps", "PageNumber": "1", "PageSize": "5"}, ts=datetime.now(UTC) + delta
        )
        body = json.loads(raw)
        assert status == 400 and body["Code"] == "InvalidTimeStamp.Expired", body
    status, _ = raw_call(
        agent,
        {"Action": "ListCorps", "PageNumber": "1", "PageSize": "5"},
        ts=datetime.now(UTC) - timedelta(minutes=14),
    )
    assert status == 200


def test_unknown_action_and_bad_version(agent: Agent) -> None:
    status, raw = raw_call(agent, {"Action": "FlyToTheMoon"})
    assert status == 404 and json.loads(raw)["Code"] == "InvalidAction.NotFound"


def test_xml_format(agent: Agent) -> None:
    status, raw = raw_call(agent, {"Action": "ListCorps", "PageNumber": "1", "PageSize": "5"}, fmt="XML")
    assert status == 200
    root = ElementTree.fromstring(raw)
    assert root.tag == "ListCorpsResponse"
    assert root.findtext("RequestId")
    assert root.find("Data/Records/CorpId") is not None
    status, raw = raw_call(agent, {"Action": "ListCorps", "PageNumber": "0", "PageSize": "5"}, fmt="XML")
    root = ElementTree.fromstring(raw)
    assert status == 400 and root.tag == "Error" and root.findtext("Code") == "InvalidParameter"
    assert "PageNumber" in (root.findtext("Message") or "")


def test_malformed_requests_counted_not_crashing(agent: Agent) -> None:
    req = urllib.request.Request(
        f"{agent.endpoint}/?Action=ListCorps",
        data=b"\xff\xfe=%%%",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(info.value.read())
    assert info.value.code == 400 and body["RequestId"] and body["Code"] == "InvalidParameter"
    assert agent.api is not None and sum(agent.api.errors.values()) >= 1
