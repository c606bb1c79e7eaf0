"""Request authentication: common parameters, AccessKey, Timestamp window, signature, SignatureNonce.

Two signatures, one set of rules (:mod:`agent.api.signature`): RPC HMAC-SHA1 over the parameters (``check``) and
ACS3-HMAC-SHA256 over the request with its signed headers (``check_v3``). Both refuse with the same codes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from . import signature
from .dispatch import VERSIONS
from .errors import ApiError, invalid, missing
from .nonces import NonceStore
from .settings import ApiConfig

MAX_NONCE = 128  # the SDKs send 32 hex digits or a UUID
#: headers every ACS3-HMAC-SHA256 request must sign
_V3_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
_REQUIRED = ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp", "Version")


class Authenticator:
    """Checks one request; raises ApiError with the code Alibaba's gateway uses for each failure."""

    def __init__(self, config: ApiConfig, nonces: NonceStore, clock: Callable[[], float] = time.time) -> None:
        self.secrets = {k.id: k.secret for k in config.access_keys}
        self.skew_s = config.timestamp_skew_s
        self.clock = clock
        # persisted, so a request is refused the second time even after a restart
        self.nonces = nonces

    def check(self, method: str, params: Mapping[str, str]) -> str:
        """The AccessKeyId of a correctly signed, fresh, first-seen request."""
        for name in _REQUIRED:
            if not params.get(name):
                raise missing(name, "a common parameter of every signed call")
        nonce = params["SignatureNonce"]
        if len(nonce) > MAX_NONCE:
            raise invalid("SignatureNonce", f"{len(nonce)} characters is too long; at most {MAX_NONCE}")
        sig_method = params.get("SignatureMethod", "HMAC-SHA1")
        if sig_method.upper() != "HMAC-SHA1":
            raise invalid("SignatureMethod", f"{sig_method!r} is not supported; allowed: HMAC-SHA1")
        sig_version = params.get("SignatureVersion", "1.0")
        if sig_version != "1.0":
            raise invalid("SignatureVersion", f"{sig_version!r} is not supported; allowed: 1.0")
        _version(params["Version"], "Version")
        key_id = params["AccessKeyId"]
        secret = self._secret(key_id, "AccessKeyId")
        ts, now_s = self._fresh(params["Timestamp"], "Timestamp")
        if not signature.verify(method, params, secret, params["Signature"]):
            raise ApiError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + signature.string_to_sign(method, params),
            )
        self._nonce(key_id, nonce, ts, now_s)
        return key_id

    def check_v3(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, list[str]],
        body: bytes,
    ) -> str:
        """The AccessKeyId of a correctly signed (ACS3-HMAC-SHA256), fresh, first-seen request; ``headers`` by
        lower-case name."""
        auth = signature.parse_v3_authorization((headers.get("authorization") or [""])[0])
        if auth is None:
            raise invalid(
                "Authorization",
                "not an ACS3-HMAC-SHA256 authorization (Credential=..., SignedHeaders=..., Signature=...)",
            )
        key_id, signed, sig = auth
        for name in _V3_SIGNED:
            if name not in signed:
                raise invalid("Authorization", f"SignedHeaders must include {name}")
            if not (headers.get(name) or [""])[0]:
                raise missing(name, "a header of every ACS3-HMAC-SHA256 call")
        nonce = headers["x-acs-signature-nonce"][0]
        if len(nonce) > MAX_NONCE:
            raise invalid(
                "x-acs-signature-nonce", f"{len(nonce)} characters is too long; at most {MAX_NONCE}"
            )
        _version(headers["x-acs-version"][0], "x-acs-version")
        secret = self._secret(key_id, "Credential")
        ts, now_s = self._fresh(headers["x-acs-date"][0], "x-acs-date")
        digest = hashlib.sha256(body).hexdigest()
        if headers["x-acs-content-sha256"][0].lower() != digest:
            raise ApiError("InvalidParameter", "x-acs-content-sha256: does not match the SHA-256 of the body")
        to_sign = signature.v3_string_to_sign(
            signature.v3_canonical_request(method, path, query, headers, signed, digest)
        )
        if not hmac.compare_digest(signature.v3_sign(to_sign, secret).encode(), sig.encode()):
            raise ApiError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + to_sign,
            )
        self._nonce(key_id, nonce, ts, now_s)
        return key_id

    def _secret(self, key_id: str, name: str) -> str:
        secret = self.secrets.get(key_id)
        if secret is None:
            raise ApiError(
                "InvalidAccessKeyId.NotFound",
                f"{name}: {key_id!r} is not an access key of this box",
                404,
            )
        return secret

    def _fresh(self, text: str, name: str) -> tuple[datetime, float]:
        try:
            ts = signature.parse_timestamp(text)
        except ValueError:
            raise ApiError(
                "InvalidTimeStamp.Format", f"{name}: {text!r} is not YYYY-MM-DDThh:mm:ssZ (UTC, ISO 8601)"
            ) from None
        now_s = self.clock()
        now = datetime.fromtimestamp(now_s, UTC)
        skew = abs((now - ts).total_seconds())
        if skew > self.skew_s:
            raise ApiError(
                "InvalidTimeStamp.Expired",
                f"{name}: {text} is {int(skew)} s away from this box's clock "
                f"({signature.format_timestamp(now)}); allowed within {self.skew_s} s",
            )
        return ts, now_s

    def _nonce(self, key_id: str, nonce: str, ts: datetime, now_s: float) -> None:
        fresh = self.nonces.add(f"{key_id}\n{nonce}", ts.timestamp(), now_s)
        if fresh is None:
            raise ApiError("Throttling", "too many requests inside the replay window; retry later", 503)
        if not fresh:
            raise ApiError(
                "SignatureNonceUsed",
                "SignatureNonce: this nonce was used already; send a new random nonce with each call",
            )


def _version(version: str, name: str) -> None:
    if version not in VERSIONS:
        raise ApiError(
            "InvalidVersion", f"{name}: {version!r} is not supported; allowed: {', '.join(VERSIONS)}"
        )
