"""SIP messages (RFC 3261): model, a parser that returns errors as values, and a serializer.

The parser accepts compact header names, any header-name case, folded header lines, several Via values per
line and a body sized by Content-Length in bytes. Anything malformed comes back as a :class:`ParseError`
instead of an exception, so the transport can count it and drop it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 65_535
MAX_HEADER_BYTES = 16_384
MAX_HEADERS = 128

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Max-Forwards",
        "User-Agent",
        "Server",
        "Expires",
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Date",
        "Subject",
        "Route",
        "Record-Route",
        "Allow",
        "Supported",
        "Event",
        "Subscription-State",
        "Allow-Events",
        "Refer-To",
        "Warning",
        "Retry-After",
    )
}

# Headers whose values may be comma-joined on one line (RFC 3261 7.3.1); auth headers never are.
_MULTI = {"Via", "Contact", "Route", "Record-Route", "Allow", "Supported"}

_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_REQUEST_LINE = re.compile(rf"^({_TOKEN}) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d)(?: (.*))?$")
_HEADER_NAME = re.compile(rf"^{_TOKEN}$")


def canonical_name(name: str) -> str:
    """Compact and odd-case names map to one spelling: ``i`` and ``call-id`` both become ``Call-ID``."""
    low = name.strip().lower()
    if low in COMPACT:
        return COMPACT[low]
    return _CANONICAL.get(low) or "-".join(part.capitalize() for part in low.split("-"))


class Headers:
    """Ordered, case-insensitive header list; names are stored canonically."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items or []:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one, at the place of the first."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items = [item for j, item in enumerate(self._items) if j <= i or item[0] != key]
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._items = [item for item in self._items if item[0] != key]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value, splitting comma-joined lines for the headers that allow it."""
        key = canonical_name(name)
        out: list[str] = []
        for n, v in self._items:
            if n == key:
                out.extend(split_commas(v) if key in _MULTI else [v])
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == canonical_name(name) for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


def split_commas(value: str) -> list[str]:
    """Split on commas outside quotes and angle brackets."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    angle = 0
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\" and quoted:
            escape = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle += 1
        elif ch == ">" and not quoted and angle:
            angle -= 1
        elif ch == "," and not quoted and not angle:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    tail = "".join(buf).strip()
    if tail or parts:
        parts.append(tail)
    return [p for p in parts if p]


def parse_params(text: str) -> dict[str, str]:
    """``;a=b;c`` -> ``{"a": "b", "c": ""}``, keys lower-cased, quotes removed."""
    params: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, _, val = part.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[key.strip().lower()] = val
    return params


@dataclass(slots=True)
class SipUri:
    """``sip:user@host:port;params`` (enough for GB28181: no headers part, no passwords)."""

    user: str
    host: str
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        userpart = f"{self.user}@" if self.user else ""
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"{self.scheme}:{userpart}{hostport}{params}"


def parse_uri(text: str) -> SipUri | None:
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        return None
    rest = rest.partition("?")[0]
    main, _, ptext = rest.partition(";")
    user, at, hostport = main.rpartition("@")
    if not at:
        user, hostport = "", main
    user = user.partition(":")[0]
    port: int | None = None
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        if tail.startswith(":"):
            if not tail[1:].isdecimal():
                return None
            port = int(tail[1:])
    else:
        host, colon, ptxt = hostport.partition(":")
        if colon:
            if not ptxt.isdecimal() or len(ptxt) > 5:
                return None
            port = int(ptxt)
    if not host:
        return None
    return SipUri(user=user, host=host, port=port, scheme=scheme.lower(), params=parse_params(ptext))


@dataclass(slots=True)
class NameAddr:
    """From/To/Contact value: optional display name, URI text and header parameters (tag, expires)."""

    uri: str
    display: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    @property
    def user(self) -> str:
        parsed = parse_uri(self.uri)
        return parsed.user if parsed else ""

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"{display}<{self.uri}>{params}"


def parse_name_addr(value: str) -> NameAddr | None:
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri, close, ptext = rest.partition(">")
        if not close:
            return None
        display = display.strip().strip('"')
    else:
        display = ""
        uri, _, ptext = value.partition(";")
    uri = uri.strip()
    if not uri:
        return None
    return NameAddr(uri=uri, display=display, params=parse_params(ptext))


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"SIP/2.0/{self.transport} {hostport}{params}"


def parse_via(value: str) -> Via | None:
    proto, _, rest = value.strip().partition(" ")
    parts = [p.strip() for p in proto.split("/")]
    if len(parts) != 3 or parts[0].upper() != "SIP":
        return None
    sent_by, _, ptext = rest.strip().partition(";")
    sent_by = sent_by.strip()
    port: int | None = None
    if sent_by.startswith("["):
        host, _, tail = sent_by[1:].partition("]")
        if tail.startswith(":") and tail[1:].isdecimal():
            port = int(tail[1:])
    else:
        host, colon, ptxt = sent_by.partition(":")
        if colon:
            if not ptxt.strip().isdecimal():
                return None
            port = int(ptxt)
    if not host:
        return None
    return Via(transport=parts[2].upper(), host=host, port=port, params=parse_params(ptext))


@dataclass(slots=True)
class ParseError:
    """Why a message was rejected; never raised, always returned."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(slots=True)
class _Message:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        parsed = parse_cseq(self.headers.get("CSeq") or "")
        return parsed if parsed else (0, "")

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "") or NameAddr(uri="")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "") or NameAddr(uri="")

    @property
    def vias(self) -> list[Via]:
        return [v for v in (parse_via(x) for x in self.headers.get_all("Via")) if v is not None]

    @property
    def branch(self) -> str:
        vias = self.vias
        return vias[0].branch if vias else ""

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _encode(self, start: str) -> bytes:
        lines = [start]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(slots=True)
class SipRequest(_Message):
    method: str = ""
    uri: str = ""

    def encode(self) -> bytes:
        return self._encode(f"{self.method} {self.uri} SIP/2.0")


@dataclass(slots=True)
class SipResponse(_Message):
    status: int = 200
    reason: str = "OK"

    def encode(self) -> bytes:
        return self._encode(f"SIP/2.0 {self.status} {self.reason}")


SipMessage = SipRequest | SipResponse


def parse_cseq(value: str) -> tuple[int, str] | None:
    num, _, method = value.strip().partition(" ")
    method = method.strip()
    if not num.isdecimal() or len(num) > 10 or not re.fullmatch(_TOKEN, method or "-"):
        return None
    return int(num), method.upper()


def find_header_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """Offset of the blank line ending the headers and its length; (-1, 0) when not there yet."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return crlf, 4
    if lf >= 0:
        return lf, 2
    return -1, 0


def parse_message(data: bytes, *, stream: bool = False) -> SipMessage | ParseError:
    """Parse one complete message (a UDP datagram, or one frame cut by :mod:`gb28181.tcpframing`).

    On a datagram a missing Content-Length means "the rest of the datagram" (RFC 3261 18.3); on a stream it
    means an empty body. Extra bytes after the declared body are ignored, a short body is an error.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        return ParseError("not bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        return ParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    data = data.lstrip(b"\r\n")
    if not data:
        return ParseError("empty message")
    end, sep = find_header_end(data)
    if end < 0:
        head_bytes, rest = data, b""
        if len(head_bytes) > MAX_HEADER_BYTES or not data.endswith((b"\r\n", b"\n")):
            return ParseError("no blank line after the headers (truncated message)")
    else:
        head_bytes, rest = data[:end], data[end + sep :]
    if len(head_bytes) > MAX_HEADER_BYTES:
        return ParseError(f"header section of {len(head_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    if b"\x00" in head_bytes:
        return ParseError("NUL byte in the header section")
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return ParseError("header section is not UTF-8")
    lines = head.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ParseError("empty start line")
    start = lines[0].rstrip("\r")
    unfolded: list[str] = []
    for line in lines[1:]:
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t"):
            if not unfolded:
                return ParseError("continuation line before the first header")
            unfolded[-1] += " " + line.strip()
        elif line:
            unfolded.append(line)
    if len(unfolded) > MAX_HEADERS:
        return ParseError(f"more than {MAX_HEADERS} headers")
    headers = Headers()
    for line in unfolded:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.match(name):
            return ParseError(f"malformed header line {line[:60]!r}")
        headers.add(name, value.strip())

    clen_text = headers.get("Content-Length")
    if clen_text is None:
        body = b"" if stream else rest
    else:
        if not clen_text.isdecimal() or len(clen_text) > 7:
            return ParseError(f"bad Content-Length {clen_text[:20]!r}")
        clen = int(clen_text)
        if clen > len(rest):
            return ParseError(f"Content-Length {clen} but only {len(rest)} body bytes (truncated)")
        body = rest[:clen]
    headers.remove("Content-Length")

    for required in ("Call-ID", "CSeq", "From", "To", "Via"):
        if not headers.get(required):
            return ParseError(f"missing {required} header")
    cseq = parse_cseq(headers.get("CSeq") or "")
    if cseq is None:
        return ParseError(f"bad CSeq {headers.get('CSeq', '')!r}")
    if parse_name_addr(headers.get("From") or "") is None or parse_name_addr(headers.get("To") or "") is None:
        return ParseError("malformed From or To")
    if not any(parse_via(v) for v in headers.get_all("Via")[:1]):
        return ParseError("malformed top Via")

    m = _STATUS_LINE.match(start)
    if m:
        return SipResponse(headers=headers, body=body, status=int(m.group(1)), reason=m.group(2) or "")
    m = _REQUEST_LINE.match(start)
    if m:
        method = m.group(1).upper()
        if parse_uri(m.group(2)) is None:
            return ParseError(f"bad Request-URI {m.group(2)[:60]!r}")
        if cseq[1] != method:
            return ParseError(f"CSeq method {cseq[1]} does not match {method}")
        return SipRequest(headers=headers, body=body, method=method, uri=m.group(2))
    return ParseError(f"bad start line {start[:60]!r}")


REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str = "",
    body: bytes = b"",
    source: tuple[str, int] | None = None,
) -> SipResponse:
    """A response copying Via/From/To/Call-ID/CSeq (RFC 3261 8.2.6.2); adds ``to_tag`` if To has none.

    With ``source`` (where the request came from) the top Via gets ``received``/``rport`` (RFC 3581).
    """
    headers = Headers()
    first_via = True
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for n, v in request.headers:
            if n != name:
                continue
            if n == "Via" and first_via:
                first_via = False
                values = split_commas(v)
                top = parse_via(values[0]) if values else None
                if top is not None and source is not None:
                    if "rport" in top.params:
                        top.params["rport"] = str(source[1])
                    if top.host != source[0] or "rport" in top.params:
                        top.params["received"] = source[0]
                    v = ", ".join([str(top), *values[1:]])
            headers.add(n, v)
    to = request.to
    if to_tag and not to.tag and status != 100:
        to.params["tag"] = to_tag
        headers.set("To", str(to))
    return SipResponse(headers=headers, body=body, status=status, reason=reason or REASONS.get(status, ""))
