"""HTTP digest authentication as SIP uses it (RFC 2617 with qop=auth, RFC 2069 without), MD5 only.

Client side for the device (challenge -> Authorization) and server side for test platforms (verify).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(slots=True)
class DigestError:
    """A challenge or credentials header we cannot use; returned, never raised."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(slots=True)
class Challenge:
    realm: str
    nonce: str
    qop: str | None = None
    algorithm: str = "MD5"
    opaque: str | None = None
    stale: bool = False


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest a="b", c=d`` -> ("digest", {"a": "b", "c": "d"}); keys lower-cased, quotes unescaped."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        start = i
        while i < n and rest[i] not in "=,":
            i += 1
        key = rest[start:i].strip().lower()
        if i >= n or rest[i] != "=":
            if key:
                params[key] = ""
            continue
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(rest[i])
                i += 1
            i += 1
            val = "".join(buf)
        else:
            start = i
            while i < n and rest[i] != ",":
                i += 1
            val = rest[start:i].strip()
        if key:
            params[key] = val
    return scheme.lower(), params


def parse_challenge(value: str) -> Challenge | DigestError:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` value."""
    scheme, params = parse_auth_params(value)
    if scheme != "digest":
        return DigestError(f"unsupported auth scheme {scheme!r}")
    if "nonce" not in params:
        return DigestError("challenge without nonce")
    algorithm = params.get("algorithm", "MD5") or "MD5"
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        return DigestError(f"unsupported digest algorithm {algorithm!r}")
    qop: str | None = None
    if "qop" in params:
        offered = [q.strip().lower() for q in params["qop"].split(",")]
        if "auth" not in offered:
            return DigestError(f"unsupported qop {params['qop']!r}")
        qop = "auth"
    return Challenge(
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        qop=qop,
        algorithm=algorithm,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def compute_response(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str = "00000001",
    cnonce: str = "",
    algorithm: str = "MD5",
) -> str:
    ha1 = _md5(f"{username}:{realm}:{password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def authorization(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str = "",
) -> str:
    """The Authorization header value; ``uri`` must be the Request-URI exactly as sent."""
    nc_text = f"{nc:08x}"
    response = compute_response(
        username,
        challenge.realm,
        password,
        method,
        uri,
        challenge.nonce,
        qop=challenge.qop,
        nc=nc_text,
        cnonce=cnonce,
        algorithm=challenge.algorithm,
    )
    parts = [
        f'username="{username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    if challenge.qop:
        parts += [f'cnonce="{cnonce}"', f"qop={challenge.qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)


def challenge_header(realm: str, nonce: str, *, qop: bool = True, algorithm: str | None = "MD5") -> str:
    """A ``WWW-Authenticate`` value as WVP writes it (for test platforms)."""
    parts = [f'realm="{realm}"']
    if qop:
        parts.append('qop="auth"')
    parts.append(f'nonce="{nonce}"')
    if algorithm:
        parts.append(f'algorithm="{algorithm}"')
    return "Digest " + ",".join(parts)


def verify(value: str, password: str, method: str, *, nonce: str | None = None) -> bool:
    """Server-side check of an Authorization value (username/realm/uri are taken from the header)."""
    scheme, p = parse_auth_params(value)
    if scheme != "digest" or not all(k in p for k in ("username", "realm", "nonce", "uri", "response")):
        return False
    if nonce is not None and p["nonce"] != nonce:
        return False
    expected = compute_response(
        p["username"],
        p["realm"],
        password,
        method,
        p["uri"],
        p["nonce"],
        qop=p.get("qop") or None,
        nc=p.get("nc", ""),
        cnonce=p.get("cnonce", ""),
        algorithm=p.get("algorithm", "MD5") or "MD5",
    )
    return expected == p["response"].lower()
