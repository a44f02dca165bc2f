"""Desk accounts: argon2 password hashes, roles, logins with a rate limit, and the optional
user header of a trusted reverse proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.session import Database
from mailbot.db.web import LoginFailure, Role, WebUser
from mailbot.errors import ExitCode, PermanentError

F = TypeVar("F", bound=Callable[..., Any])


class UserError(PermanentError):
    """A desk account cannot be added, changed or removed as asked."""

    exit_code = ExitCode.USAGE


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    if len(password) < 8:
        raise UserError("the password is too short: use at least 8 characters")
    return str(_hasher().hash(password))


def check_password(user: WebUser, password: str) -> bool:
    """Whether the password is the user's."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(user.password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


# Checked when a name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH: list[str] = []


def verify_login(session: Session, name: str, password: str) -> WebUser | None:
    """The user, if the name and password match."""
    user = session.scalar(select(WebUser).where(WebUser.name == name))
    if user is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(str(_hasher().hash("not a password of anyone")))
        check_password(WebUser(password_hash=_DUMMY_HASH[0]), password)
        return None
    if not check_password(user, password):
        return None
    user.last_login_at = utcnow()
    return user


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UserError(f"role {value!r}: expected agent, manager or admin") from None


def add_user(session: Session, name: str, role: str, password: str,
             mailboxes: list[str] | None = None) -> WebUser:
    """Create a desk account."""
    name = name.strip()
    if not name or len(name) > 200 or any(c.isspace() for c in name):
        raise UserError(f"user name {name!r}: expected 1-200 characters without spaces")
    if session.scalar(select(WebUser.id).where(WebUser.name == name)) is not None:
        raise UserError(f"user {name!r} exists already; use `mailbot user passwd {name}` to "
                        "change the password")
    user = WebUser(name=name, role=parse_role(role), password_hash=hash_password(password),
                   session_epoch=0, mailboxes=",".join(mailboxes or []), created_at=utcnow())
    session.add(user)
    return user


def set_password(session: Session, name: str, password: str) -> None:
    """Change a password; the user's open sessions end."""
    user = get_user(session, name)
    user.password_hash = hash_password(password)
    user.session_epoch += 1


def remove_user(session: Session, name: str) -> None:
    """Remove a desk account (its audit trail stays, under its name)."""
    session.delete(get_user(session, name))


def get_user(session: Session, name: str) -> WebUser:
    user = session.scalar(select(WebUser).where(WebUser.name == name))
    if user is None:
        raise UserError(f"no desk user named {name!r}; `mailbot user list` shows them")
    return user


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The person behind a request."""

    id: int
    name: str
    role: Role
    mailboxes: tuple[str, ...]  # "account/folder"; empty = every mailbox

    def at_least(self, role: Role) -> bool:
        return self.role.rank >= role.rank

    @property
    def sees_all(self) -> bool:
        return self.at_least(Role.MANAGER) or not self.mailboxes


def current_from(user: WebUser) -> CurrentUser:
    boxes = tuple(b for b in (user.mailboxes or "").split(",") if b)
    return CurrentUser(user.id, user.name, Role(user.role), boxes)


class LoginLimiter:
    """Failed logins per user name and per client address in a sliding window.

    The failures are rows in the database, not this process's memory: the desk usually
    runs as several worker processes (and hosts), and a guesser spread over them is counted
    once. Rows older than the window are deleted as new failures come in.
    """

    def __init__(self, database: Database, attempts: int, window: float) -> None:
        self.database = database
        self.attempts = attempts
        self.window = window

    @staticmethod
    def _keys(name: str, address: str) -> tuple[str, str]:
        return f"user:{name}"[:300], f"addr:{address}"[:300]

    def blocked(self, name: str, address: str) -> float:
        """Seconds until another try is allowed (0: allowed now)."""
        now = utcnow()
        since = now - timedelta(seconds=self.window)
        waits = []
        with self.database.session() as session:
            for key in self._keys(name, address):
                recent = list(session.scalars(
                    select(LoginFailure.failed_at)
                    .where(LoginFailure.key == key, LoginFailure.failed_at > since)
                    .order_by(LoginFailure.failed_at.desc()).limit(self.attempts)))
                if len(recent) >= self.attempts:
                    # The oldest of the last `attempts` failures frees a try when it expires.
                    waits.append((recent[-1] - since).total_seconds())
        return max(waits, default=0.0)

    def failed(self, name: str, address: str) -> None:
        """Count a failed login against the name and the address."""
        now = utcnow()
        with self.database.session() as session:
            session.execute(delete(LoginFailure).where(
                LoginFailure.failed_at <= now - timedelta(seconds=self.window)))
            session.add_all([LoginFailure(key=key, failed_at=now)
                             for key in self._keys(name, address)])

    def succeeded(self, name: str) -> None:
        """The user logged in: their name's failures no longer count (the address's do)."""
        key = self._keys(name, "")[0]
        with self.database.session() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.key == key))


def from_trusted_proxy(remote: str | None, proxies: list[str]) -> bool:
    """Whether the request came from one of the configured reverse proxies."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(p, strict=False) for p in proxies)


def safe_next(target: str | None) -> str:
    """A path on this site to go to after login; anything else goes to the queue."""
    if (not target or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 32 for c in target)):
        return "/"
    return target


def require(role: Role) -> Callable[[F], F]:
    """A view for users of at least this role (others get 403; anonymous users the login)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            from flask import abort, g, redirect, request, url_for

            user: CurrentUser | None = g.get("user")
            if user is None:
                return redirect(url_for("login", next=request.full_path.rstrip("?")))
            if not user.at_least(role):
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate
