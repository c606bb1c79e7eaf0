"""The VCS-compatible management API (seed 002): the official Alibaba Cloud SDKs can drive a box.

``ApiServer`` is an aiohttp listener of its own (address, TLS and access keys from the site file's
``api`` section) that checks Alibaba's RPC signature, dispatches ``Action=...`` to ``actions/`` and changes
the running :class:`agent.runtime.Supervisor` at once; what it creates is persisted by ``state.py`` and
re-applied at start.
"""

from .app import ApiServer
from .settings import AccessKey, ApiConfig

__all__ = ["AccessKey", "ApiConfig", "ApiServer"]
