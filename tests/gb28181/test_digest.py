"""Digest authentication: the two checked vectors, the capture's Authorization, and challenge variants."""

from __future__ import annotations

from gb28181.digest import (
    Challenge,
    DigestError,
    authorization,
    challenge_header,
    compute_response,
    parse_auth_params,
    parse_challenge,
    verify,
)
from gb28181.sip import SipRequest, SipResponse, parse_message
from tests.gb28181 import captures


def test_vector_hikvision_livegbs() -> None:
    assert (
        compute_response(
            "34020000001320000264",
            "3402000000",
            "12345678",
            "REGISTER",
            "sip:34020000002000000001@3402000000",
            "6eb1340d99c404a0e4d3b68d15d1d46f",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "4c97657aa0412c25d4b862219b635c17"
    )


def test_vector_wvp_issue_2059() -> None:
    assert (
        compute_response(
            "34020000001110000301",
            "3100000000",
            "336699",
            "REGISTER",
            "sip:31000000000121100010@3100000000",
            "72ebe402c9b39b11ec648ff1c1c5a3f2",
            qop="auth",
            nc="00000001",
            cnonce="67dd03c3",
        )
        == "9a61637436620c51e4b2abf82a53e6be"
    )


def test_capture_replay_builds_the_same_authorization() -> None:
    resp = parse_message(captures.HIK_401)
    second = parse_message(captures.HIK_REGISTER_2)
    assert isinstance(resp, SipResponse) and isinstance(second, SipRequest)
    challenge = parse_challenge(resp.headers.get("WWW-Authenticate") or "")
    assert isinstance(challenge, Challenge) and challenge.qop == "auth" and challenge.realm == "3402000000"
    ours = authorization(
        challenge, "34020000001320000264", "12345678", "REGISTER", second.uri, nc=1, cnonce="0a4f113b"
    )
    _, ours_p = parse_auth_params(ours)
    _, theirs_p = parse_auth_params(second.headers.get("Authorization") or "")
    for key in ("username", "realm", "nonce", "uri", "response", "cnonce", "qop", "nc"):
        assert ours_p[key] == theirs_p[key], key
    assert verify(second.headers.get("Authorization") or "", "12345678", "REGISTER")
    assert not verify(second.headers.get("Authorization") or "", "wrong", "REGISTER")


def test_without_qop_uses_rfc2069_and_no_cnonce() -> None:
    challenge = parse_challenge('Digest realm="3402000000", nonce="abc", algorithm=md5')
    assert isinstance(challenge, Challenge) and challenge.qop is None
    header = authorization(challenge, "u", "p", "REGISTER", "sip:s@3402000000", cnonce="zz")
    assert "cnonce" not in header and "nc=" not in header and "qop" not in header
    assert verify(header, "p", "REGISTER")
    _, p = parse_auth_params(header)
    assert p["response"] == compute_response("u", "3402000000", "p", "REGISTER", "sip:s@3402000000", "abc")


def test_challenge_variants_and_errors() -> None:
    wvp = parse_challenge(challenge_header("3402000000", "n1"))
    assert isinstance(wvp, Challenge) and wvp.algorithm == "MD5" and wvp.qop == "auth"
    stale = parse_challenge('Digest realm="r", nonce="n2", stale=TRUE, qop="auth,auth-int", opaque="o"')
    assert isinstance(stale, Challenge) and stale.stale and stale.qop == "auth" and stale.opaque == "o"
    assert 'opaque="o"' in authorization(stale, "u", "p", "REGISTER", "sip:x@y", cnonce="c")
    assert isinstance(parse_challenge('Basic realm="r"'), DigestError)
    assert isinstance(parse_challenge('Digest realm="r"'), DigestError)
    assert isinstance(parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256'), DigestError)
    assert isinstance(parse_challenge('Digest realm="r", nonce="n", qop="auth-int"'), DigestError)
    _, p = parse_auth_params('Digest realm="a\\"b,c", nonce=x')
    assert p == {"realm": 'a"b,c', "nonce": "x"}
