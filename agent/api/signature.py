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
import time
import uuid
from collections import OrderedDict
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


class NonceCache:
    """SignatureNonces seen inside the timestamp window, so none is accepted twice while its request could
    still pass the Timestamp check. Entries expire after ``ttl_s``; at ``max_entries`` new nonces are refused
    (``add`` returns None) rather than forgetting live ones, which would reopen the replay window."""

    def __init__(self, ttl_s: float, max_entries: int = 1_000_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _prune(self, now: float) -> None:
        seen = self._seen
        while seen:
            key, expires = next(iter(seen.items()))
            if expires > now:
                break
            del seen[key]

    def add(self, key: str, now: float | None = None) -> bool | None:
        """True when ``key`` is new (now remembered), False when seen before, None when the cache is full."""
        now = time.monotonic() if now is None else now
        self._prune(now)
        if key in self._seen:
            return False
        if len(self._seen) >= self.max_entries:
            return None
        self._seen[key] = now + self.ttl_s
        return True

    def __len__(self) -> int:
        return len(self._seen)
