"""Request authentication: common parameters, AccessKey, Timestamp window, signature, SignatureNonce."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from . import signature
from .errors import ApiError, invalid, missing
from .nonces import NonceStore
from .settings import ApiConfig

VERSIONS = ("2020-05-15", "2020-03-09")
MAX_NONCE = 128  # the SDKs send 32 hex digits or a UUID
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
        version = params["Version"]
        if version not in VERSIONS:
            raise ApiError(
                "InvalidVersion", f"Version: {version!r} is not supported; allowed: {', '.join(VERSIONS)}"
            )
        key_id = params["AccessKeyId"]
        secret = self.secrets.get(key_id)
        if secret is None:
            raise ApiError(
                "InvalidAccessKeyId.NotFound",
                f"AccessKeyId: {key_id!r} is not an access key of this box",
                404,
            )
        text = params["Timestamp"]
        try:
            ts = signature.parse_timestamp(text)
        except ValueError:
            raise ApiError(
                "InvalidTimeStamp.Format", f"Timestamp: {text!r} is not YYYY-MM-DDThh:mm:ssZ (UTC, ISO 8601)"
            ) from None
        now_s = self.clock()
        now = datetime.fromtimestamp(now_s, UTC)
        skew = abs((now - ts).total_seconds())
        if skew > self.skew_s:
            raise ApiError(
                "InvalidTimeStamp.Expired",
                f"Timestamp: {text} is {int(skew)} s away from this box's clock "
                f"({signature.format_timestamp(now)}); allowed within {self.skew_s} s",
            )
        if not signature.verify(method, params, secret, params["Signature"]):
            raise ApiError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + signature.string_to_sign(method, params),
            )
        fresh = self.nonces.add(f"{key_id}\n{nonce}", ts.timestamp(), now_s)
        if fresh is None:
            raise ApiError("Throttling", "too many requests inside the replay window; retry later", 503)
        if not fresh:
            raise ApiError(
                "SignatureNonceUsed",
                "SignatureNonce: this nonce was used already; send a new random nonce with each call",
            )
        return key_id
