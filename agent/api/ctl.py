"""``vcs-edge ctl``: sign and send one VCS API call to a box and print the response.

    VCS_ACCESS_KEY_SECRET=... vcs-edge ctl --endpoint http://127.0.0.1:8781 --access-key-id ops \\
        DescribeIpcs PageNum=1 PageSize=10

The secret is read from the environment (``--secret-env`` names the variable), never from the command line.
Exit status: 0 on a 2xx answer, 1 on an API error, 2 on a usage or connection problem.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlencode

from . import signature


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcs-edge ctl", description="sign and send one VCS API call to a box")
    p.add_argument(
        "--endpoint",
        default=os.environ.get("VCS_ENDPOINT", "http://127.0.0.1:8781"),
        help="base URL of the box's API (default $VCS_ENDPOINT or http://127.0.0.1:8781)",
    )
    p.add_argument(
        "--access-key-id",
        default=os.environ.get("VCS_ACCESS_KEY_ID"),
        help="AccessKeyId (default $VCS_ACCESS_KEY_ID)",
    )
    p.add_argument(
        "--secret-env",
        default="VCS_ACCESS_KEY_SECRET",
        help="environment variable holding the AccessKeySecret (default VCS_ACCESS_KEY_SECRET)",
    )
    p.add_argument("--format", choices=["JSON", "XML"], default="JSON")
    p.add_argument("--api-version", default="2020-05-15", choices=["2020-05-15", "2020-03-09"])
    p.add_argument("--cafile", help="CA bundle to verify an HTTPS box with")
    p.add_argument("--insecure", action="store_true", help="do not verify the box's TLS certificate")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("action", help="the Action, such as DescribeIpcs")
    p.add_argument("params", nargs="*", metavar="Key=Value", help="business parameters")
    return p


def call(
    endpoint: str,
    access_key_id: str,
    secret: str,
    action: str,
    params: dict[str, str],
    *,
    fmt: str = "JSON",
    version: str = "2020-05-15",
    timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """POST one signed call (common parameters in the query, business ones in the form body, as the SDK
    does); returns (HTTP status, body)."""
    query = signature.common_params(action, access_key_id, version, fmt)
    signed = {**query, **params}
    query["Signature"] = signature.sign("POST", signed, secret)
    url = endpoint.rstrip("/") + "/?" + urlencode(query)
    body = urlencode(params).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "x-acs-action": action,
            "x-acs-version": version,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.access_key_id:
        print("vcs-edge ctl: give --access-key-id (or set VCS_ACCESS_KEY_ID)", file=sys.stderr)
        return 2
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"vcs-edge ctl: set the AccessKeySecret in ${args.secret_env}", file=sys.stderr)
        return 2
    params: dict[str, str] = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"vcs-edge ctl: {item!r} is not Key=Value", file=sys.stderr)
            return 2
        params[key] = value
    context = None
    if args.endpoint.startswith("https"):
        context = ssl.create_default_context(cafile=args.cafile)
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        status, body = call(
            args.endpoint,
            args.access_key_id,
            secret,
            args.action,
            params,
            fmt=args.format,
            version=args.api_version,
            timeout=args.timeout,
            context=context,
        )
    except (urllib.error.URLError, OSError) as exc:
        print(f"vcs-edge ctl: cannot reach {args.endpoint}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 2
    text = body.decode("utf-8", "replace")
    if args.format == "JSON":
        try:
            text = json.dumps(json.loads(text), ensure_ascii=False, indent=2)
        except json.JSONDecodeError:
            pass
    print(text)
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    raise SystemExit(main())
