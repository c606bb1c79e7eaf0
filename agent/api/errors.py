"""API errors in the VCS shape: ``{"RequestId", "Code", "Message"}`` with the HTTP status the SDKs expect."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered to the caller. ``message`` names the parameter at fault and what is allowed."""

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def invalid(name: str, message: str) -> ApiError:
    """InvalidParameter naming ``name``: ``"PageSize: 500 is out of range; allowed 1..200"``."""
    return ApiError("InvalidParameter", f"{name}: {message}")


def missing(name: str, what: str = "") -> ApiError:
    hint = f" ({what})" if what else ""
    return ApiError("InvalidParameter", f"{name}: required parameter is missing{hint}")


def not_found(code: str, name: str, value: str, what: str) -> ApiError:
    """404 for an object the caller named that does not exist (``DeviceNotFound``...)."""
    return ApiError(code, f"{name}: {what} {value!r} does not exist on this box", 404)


def declared(name: str, value: str, what: str, site_path: str | None) -> ApiError:
    """403: objects of the site file are changed by editing the file (and reloading), not through the API."""
    where = f" {site_path}" if site_path else ""
    return ApiError(
        "Forbidden.Declared",
        f"{name}: {what} {value!r} is declared in the site file{where}; change or remove it there and reload "
        "(vcs-edge re-reads the file on SIGHUP)",
        403,
    )
