"""Action handlers by product and name. Each takes the context and the request parameters and returns the
response body (without RequestId); problems are raised as :class:`agent.api.errors.ApiError`. The handlers live
in ``agent.api.actions`` and register here with :func:`action`.

Several Alibaba Cloud products share the box's one API listener, one signer (RPC, HMAC-SHA1: their SDKs sign
alike) and one error shape; the request's signed ``Version`` names the product, so the same action name in two
products cannot collide:

* ``2020-05-15`` (and ``2020-03-09``, the seeds' document): VCS, ``alibabacloud-vcs20200515``;
* ``2020-03-20``: visual search (image databases, seed 003), ``alibabacloud-imgsearch20200320``;
* ``2018-01-20``: LinkVisual picture search jobs (seed 004), ``alibabacloud-linkvisual20180120``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .context import ApiContext
from .params import Params

Handler = Callable[[ApiContext, Params], Awaitable[dict[str, Any]]]

VCS = "2020-05-15"
IMGSEARCH = "2020-03-20"
LINKVISUAL = "2018-01-20"

#: the Version a request may carry -> the product whose actions it calls
VERSIONS: dict[str, str] = {VCS: VCS, "2020-03-09": VCS, IMGSEARCH: IMGSEARCH, LINKVISUAL: LINKVISUAL}
PRODUCTS: dict[str, str] = {VCS: "VCS", IMGSEARCH: "visual search", LINKVISUAL: "LinkVisual"}

#: (product Version, Action) -> handler
ACTIONS: dict[tuple[str, str], Handler] = {}


def action(name: str, product: str = VCS) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ACTIONS[(product, name)] = fn
        return fn

    return register


def paged(total: int, size: int) -> int:
    return (total + size - 1) // size if size else 0
