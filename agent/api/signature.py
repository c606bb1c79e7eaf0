"""Alibaba Cloud RPC request signing (HMAC-SHA1, SignatureVersion 1.0): one implementation for the server
check, the ``ctl`` client and the benchmark.

``string_to_sign = METHOD & enc("/") & enc(canonical query)`` where the canonical query is every parameter
(query string and form body merged, ``Signature`` left out) sorted by name and percent-encoded with only
``A-Z a-z 0-9 - _ . ~`` unreserved. The key is ``AccessKeySecret + "&"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def percent_encode(value: str) -> str:
    return quote(value, safe="-_.~", encoding="utf-8")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(method: str, params: Mapping[str, str], secret: str) -> str:
    digest = hmac.new((secret + "&").encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(method: str, params: Mapping[str, str], secret: str, signature: str) -> bool:
    return hmac.compare_digest(sign(method, params, secret).encode(), signature.encode())


def parse_timestamp(text: str) -> datetime:
    """``YYYY-MM-DDThh:mm:ssZ`` (UTC, as the SDKs send it); ValueError otherwise."""
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def format_timestamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def common_params(
    action: str, access_key_id: str, version: str = "2020-05-15", fmt: str = "JSON"
) -> dict[str, str]:
    """The common parameters of one call, fresh Timestamp and SignatureNonce included (for clients)."""
    return {
        "Action": action,
        "Format": fmt,
        "Version": version,
        "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": format_timestamp(),
    }
