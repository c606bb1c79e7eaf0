"""Alibaba Cloud request signing: one implementation for the server check, the ``ctl`` client and the benchmark.

RPC (HMAC-SHA1, SignatureVersion 1.0), what ``alibabacloud-vcs20200515`` (it sets ``signature_algorithm='v2'``)
and the old SDK send: ``string_to_sign = METHOD & enc("/") & enc(canonical query)`` where the canonical query is
every parameter (query string and form body merged, ``Signature`` left out) sorted by name and percent-encoded
with only ``A-Z a-z 0-9 - _ . ~`` unreserved. The key is ``AccessKeySecret + "&"``.

ACS3-HMAC-SHA256 (the V3 signature), what ``alibabacloud-imgsearch20200320`` and
``alibabacloud-linkvisual20180120`` send with the same tea-openapi core, because they leave its default: the
``Authorization`` header ``ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<h1;h2...>,Signature=<hex>``
over the canonical request ``METHOD \n path \n canonical query \n canonical headers \n signed headers \n
hex(sha256(body))``, where the canonical query is the query string's parameters sorted by name as ``name=`` +
value percent-encoded with only ``~`` and alphanumerics unreserved, and each signed header is ``name:value\n``
(lower-case names, values trimmed, repeated values sorted and joined with ``,``). ``string_to_sign =
"ACS3-HMAC-SHA256\n" + hex(sha256(canonical request))``, signed with HMAC-SHA256 under the plain
AccessKeySecret. Action, Version, date and nonce travel in the signed headers ``x-acs-action``,
``x-acs-version``, ``x-acs-date`` and ``x-acs-signature-nonce``, and ``x-acs-content-sha256`` carries the body's
hash.
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


V3_ALGORITHM = "ACS3-HMAC-SHA256"


def v3_canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{k}={quote(v, safe='~', encoding='utf-8')}" for k, v in sorted(query.items()))


def v3_canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, list[str]],
    signed: list[str],
    payload_hash: str,
) -> str:
    """``headers``: lower-case name -> its values, for every name in ``signed``."""
    canon = "".join(f"{h}:{','.join(sorted(v.strip() for v in headers.get(h, [])))}\n" for h in signed)
    return f"{method.upper()}\n{path or '/'}\n{v3_canonical_query(query)}\n{canon}\n{';'.join(signed)}\n{payload_hash}"


def v3_string_to_sign(canonical_request: str) -> str:
    return f"{V3_ALGORITHM}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"


def v3_sign(string_to_sign: str, secret: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def parse_v3_authorization(value: str) -> tuple[str, list[str], str] | None:
    """``(access key id, signed header names, signature)`` of an ACS3-HMAC-SHA256 Authorization header."""
    algo, _, rest = value.strip().partition(" ")
    if algo != V3_ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        k, sep, v = part.strip().partition("=")
        if not sep:
            return None
        fields[k] = v
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    signed = [h for h in fields["SignedHeaders"].split(";") if h]
    return fields["Credential"], signed, fields["Signature"]


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
