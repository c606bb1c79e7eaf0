"""The ``api:`` section of the site file lives in :mod:`agent.config` with every other section."""

from agent.config import AccessKey, ApiConfig, GbAccessConfig

__all__ = ["AccessKey", "ApiConfig", "GbAccessConfig"]
