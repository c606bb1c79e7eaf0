"""Console users, sessions, CSRF tokens and the login rate limit.

Passwords are stored as ``scrypt$N$r$p$salt$hash`` (hashlib.scrypt, 16-byte random salt, 32-byte key), either in
the site file (``console.users``) or in ``data_dir/console.db`` (``vcs-edge user add``); the site file wins for a
name in both. A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in
memory (a restart logs everyone out) with its own CSRF token, which every form and every state-changing fetch
must send back. Failed logins are counted per client address over a sliding minute; past the limit the login
answers 429 without checking the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

DB_FILE = "console.db"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 64 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a hash made by :func:`hash_password`; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt" or int(n) > 2**20 or int(r) > 32 or int(p) > 16:
            return False
        want = _unb64(key)
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


class UserDb:
    """Users added with ``vcs-edge user add`` (``data_dir/console.db``)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, created REAL NOT NULL)"
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def set(self, name: str, password_hash: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO users (name, hash, created) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET hash = excluded.hash",
                (name, password_hash, time.time()),
            )

    def remove(self, name: str) -> bool:
        with self._lock:
            return self._conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def get(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT hash FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def names(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._conn.execute("SELECT name FROM users ORDER BY name")]


@dataclass
class Session:
    token: str
    user: str
    csrf: str
    expires: float


class Sessions:
    """Login sessions in memory; ``clock`` is injectable."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_token: dict[str, Session] = {}

    def new(self, user: str) -> Session:
        self._expire()
        s = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(24), self.clock() + self.ttl_s)
        self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None or s.expires < self.clock():
            self._by_token.pop(token or "", None)
            return None
        return s

    def end(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def _expire(self) -> None:
        now = self.clock()
        for tok in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[tok]

    def __len__(self) -> int:
        return len(self._by_token)


class LoginLimiter:
    """Failed logins per client address over the last minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._fails: dict[str, deque[float]] = {}
        self.limited = 0

    def _recent(self, addr: str) -> deque[float]:
        q = self._fails.setdefault(addr, deque())
        cutoff = self.clock() - 60.0
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def allowed(self, addr: str) -> bool:
        ok = len(self._recent(addr)) < self.per_minute
        if not ok:
            self.limited += 1
        return ok

    def failed(self, addr: str) -> None:
        self._recent(addr).append(self.clock())
        if len(self._fails) > 10_000:  # bound the table: forget the quietest addresses
            for a in [a for a, q in self._fails.items() if not q][:5000]:
                del self._fails[a]

    def succeeded(self, addr: str) -> None:
        self._fails.pop(addr, None)


class Users:
    """Site-file users first, then the database."""

    def __init__(self, site_users: Iterable[tuple[str, str]], db: UserDb | None) -> None:
        self.site = dict(site_users)
        self.db = db

    def check(self, name: str, password: str) -> bool:
        stored = self.site.get(name)
        if stored is None and self.db is not None:
            stored = self.db.get(name)
        if stored is None:
            verify_password(password, _DUMMY)  # the same work for an unknown name
            return False
        return verify_password(password, stored)

    def count(self) -> int:
        names = set(self.site)
        if self.db is not None:
            names.update(self.db.names())
        return len(names)


_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
