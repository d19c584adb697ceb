"""Who is calling: the logins (--auth, --auth-file), their password hashes, who is admin, and the
current user of each handler call (set by ui.handlers.handler from Gradio's gr.Request).

Password hashes are scrypt (hashlib, the standard library) with a random salt, written as
`scrypt$N$r$p$salt$hash` (salt and hash in unpadded base64url), so the cost can be raised later
without breaking old lines. An auth file holds one `user:hash` per line, `#` comments, and at most
one `admins: user1, user2` line; `python launch.py hash-password` prints the lines.
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# OWASP's scrypt settings (N=2^15, r=8, p=3): 32 MiB and about 0.25 s of one core per login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 3
SALT_BYTES, HASH_BYTES = 16, 32
ADMINS_KEY = "admins"   # the auth file's admin line; no login may take this name
_USER = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("wimmel_user", default=None)


class AuthFileError(ValueError):
    """An auth file that cannot be used, with the file, the line and what to do."""


# ---------------------------------------------------------------------------------- hashes

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem: scrypt needs 128*r*n bytes; hashlib's default cap (32 MiB) is just short of that.
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                          maxmem=256 * r * n)


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` of this password, with a fresh random salt."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, hash) of an encoded hash; ValueError saying what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt$N$r$p$salt$hash password hash")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ValueError("the hash's numbers or base64 parts are damaged") from None
    if n < 2 ** 10 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 64 or 128 * r * n > 2 ** 31:
        raise ValueError(f"scrypt parameters N={n} r={r} p={p} are out of range "
                         "(N a power of two from 1024, r and p 1 to 64)")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the hash's salt or digest is too short")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    n, r, p, salt, digest = parse_hash(encoded)
    candidate = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                               maxmem=256 * r * n)
    return hmac.compare_digest(candidate, digest)


def check_user_name(user: str) -> str:
    if not _USER.fullmatch(user):
        raise ValueError(f"user name {user!r} must be 1-64 letters, digits or _ . @ + -")
    if user == ADMINS_KEY:
        raise ValueError(f"{ADMINS_KEY!r} names the auth file's admin line; pick another user name")
    return user


# ---------------------------------------------------------------------------------- logins

@dataclass
class Logins:
    """The users who may log in (name -> hash) and the admins among them."""
    hashes: dict[str, str] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()
    # Verified against for an unknown name, so a wrong name costs as long as a wrong password.
    _decoy: str = field(default_factory=lambda: hash_password(secrets.token_urlsafe(16)), repr=False)

    def check(self, user: str, password: str) -> bool:
        """Gradio's auth callable: is this the user's password (constant time, like a wrong name)."""
        encoded = self.hashes.get(user)
        right = verify_password(password, encoded or self._decoy)
        return right and encoded is not None

    @classmethod
    def single(cls, user: str, password: str) -> "Logins":
        """--auth USER:PASS (and --share's generated login): one user, the admin."""
        return cls({user: hash_password(password)}, frozenset({user}))

    @classmethod
    def from_file(cls, path: str | Path, extra_admins: tuple[str, ...] = ()) -> "Logins":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthFileError(f"cannot read the auth file {path}: {exc.strerror or exc}") from None
        hashes: dict[str, str] = {}
        admins: list[tuple[int, str]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path} line {number}"
            user, sep, value = (part.strip() for part in line.partition(":"))
            if not sep or not user or not value:
                raise AuthFileError(f"{where}: expected user:hash (or {ADMINS_KEY}: user1, user2), got {raw!r}")
            if user == ADMINS_KEY:
                admins += [(number, name.strip()) for name in value.split(",") if name.strip()]
                continue
            try:
                check_user_name(user)
                parse_hash(value)
            except ValueError as exc:
                hint = " (a plain password? Write hashes only: python launch.py hash-password)" \
                    if not value.startswith("scrypt$") else ""
                raise AuthFileError(f"{where}: {exc}{hint}") from None
            if user in hashes:
                raise AuthFileError(f"{where}: user {user!r} is listed twice")
            hashes[user] = value
        if not hashes:
            raise AuthFileError(f"{path} lists no logins: add user:hash lines (python launch.py hash-password)")
        for number, name in admins + [(0, name) for name in extra_admins]:
            if name not in hashes:
                where = f"{path} line {number}" if number else "--admins"
                raise AuthFileError(f"{where}: admin {name!r} has no login in {path}")
        return cls(hashes, frozenset(name for _, name in admins) | frozenset(extra_admins))


# ---------------------------------------------------------------------------------- current user

_logins: Logins | None = None   # None: no login; whoever uses the app is its admin (local use)


def configure(logins: Logins | None) -> None:
    global _logins
    _logins = logins


def logins_required() -> bool:
    return _logins is not None


def is_admin(user: str | None) -> bool:
    """Without logins everyone is admin (the app on one's own machine); with them, the admins."""
    return _logins is None or (user is not None and user in _logins.admins)


def current_user() -> str | None:
    """The user of the handler call in progress: the login name, or the browser session's hash
    without logins; None outside a handler call."""
    return _current.get()


def user_of(request) -> str | None:
    """The user a gr.Request comes from: its login name, else its session."""
    if request is None:
        return None
    return getattr(request, "username", None) or getattr(request, "session_hash", None)


@contextlib.contextmanager
def acting_as(user: str | None) -> Iterator[None]:
    token = _current.set(user)
    try:
        yield
    finally:
        _current.reset(token)
