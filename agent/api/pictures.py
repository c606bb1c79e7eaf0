"""Pictures that API calls name by URL (AddImage and SearchImage ``ImageUrl``, CreatePictureSearchJob
``SearchPicUrl``): fetched by the box, bounded before anything decodes them.

The cloud products fetch these URLs from their own OSS; a box fetches them itself, so a URL is held to the same
rules as camera URLs (:class:`agent.api.allowlist.SourceAllowList`: ``api.allowed_source_networks`` and
``api.allowed_source_ports``, checked before connecting), only ``http``/``https``, no redirects (a redirect could
leave the allowed networks), at most ``FETCH_TIMEOUT_S`` for the whole fetch, and the body is read up to the
call's byte limit and refused past it. The bytes are then sized from their header
(:func:`pipelines.images.image_size`) and refused over ``api.max_image_pixels`` or outside the call's own side
limits, so no decoder ever sees a picture larger than allowed. Every refusal names the parameter.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from pipelines.images import image_size

from .allowlist import SourceAllowList
from .context import ApiContext
from .errors import invalid

FETCH_TIMEOUT_S = 10.0
FORMATS = ("JPEG", "PNG")


def _format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    return None


async def fetch_picture(
    ctx: ApiContext,
    name: str,
    url: str,
    *,
    max_bytes: int,
    min_side: int = 1,
    max_side: int | None = None,
) -> bytes:
    """The bytes of the JPEG or PNG at ``url``, checked as the module docstring says."""
    if not url.isascii():
        raise invalid(name, "the URL must not contain non-ASCII (for example Chinese) characters")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise invalid(name, f"scheme {scheme or '(none)'!r} is not allowed; allowed: http, https")
    await SourceAllowList(ctx.config).check(name, url)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise invalid(name, f"the picture could not be fetched: HTTP {resp.status} from the URL")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise invalid(name, f"the picture is {resp.content_length} bytes; at most {max_bytes}")
            chunks: list[bytes] = []
            got = 0
            while got <= max_bytes:
                chunk = await resp.content.read(max_bytes + 1 - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        why = "no answer within 10 s" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise invalid(name, f"the picture could not be fetched ({why})") from None
    if len(data) > max_bytes:
        raise invalid(name, f"the picture is over {max_bytes} bytes; at most {max_bytes}")
    return checked_bytes(ctx, name, data, min_side=min_side, max_side=max_side)


def checked_bytes(
    ctx: ApiContext, name: str, data: bytes, *, min_side: int = 1, max_side: int | None = None
) -> bytes:
    """``data`` when it is a JPEG or PNG whose header gives sides within the bounds and ``api.max_image_pixels``."""
    if _format(data) is None:
        raise invalid(name, f"not a picture of an allowed format; allowed: {', '.join(FORMATS)}")
    size = image_size(data)
    if size is None:
        raise invalid(name, "the picture's header is truncated or inconsistent")
    w, h = size
    limit = ctx.config.max_image_pixels
    if w * h > limit:
        raise invalid(
            name, f"a picture of {w}x{h} pixels is too large; at most {limit} pixels (api.max_image_pixels)"
        )
    if min(w, h) < min_side or (max_side is not None and max(w, h) > max_side):
        bound = f"{min_side}..{max_side}" if max_side is not None else f"at least {min_side}"
        raise invalid(name, f"a picture of {w}x{h} pixels is not allowed; each side {bound} pixels")
    return data
