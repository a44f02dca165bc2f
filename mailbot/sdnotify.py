"""systemd's notify protocol: readiness and the watchdog (sd_notify(3)), without libsystemd.

The protocol is one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET
(a leading `@` names an abstract socket). Under `Type=notify` the unit counts as started
when the worker sends `READY=1`; with `WatchdogSec=` systemd restarts it when no
`WATCHDOG=1` arrives in time. The worker pings from its main loop, and only while it is
healthy, so a hung or sick worker stops pinging and is restarted.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to systemd; does nothing when not started by it."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when it could not be sent."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(target)
                s.sendall("\n".join(lines).encode("utf-8"))
        except OSError as exc:
            log.warning("could not notify systemd at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """The seconds systemd waits for a ping ($WATCHDOG_USEC), or None without a watchdog.

    $WATCHDOG_PID, when set, must be this process (a child does not feed its parent's).
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return seconds if seconds > 0 else None


class Watchdog:
    """Pings systemd's watchdog at half its interval, from the caller's loop, while healthy.

    `feed()` is called from the worker's main loop: when the loop hangs nothing is sent; when
    `healthy()` says no (the database unreachable, a poll stuck), nothing is sent either, and
    systemd restarts the worker after `WatchdogSec=`.
    """

    def __init__(self, notifier: Notifier, interval: float | None,
                 healthy: Callable[[], tuple[bool, str]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.interval = interval
        self.healthy = healthy
        self.clock = clock
        self._last: float | None = None
        self.last_problem: str | None = None

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled and self.interval is not None

    @property
    def period(self) -> float:
        """How often to ping: half the interval, as sd_watchdog_enabled(3) advises."""
        return (self.interval or 0.0) / 2.0

    def feed(self) -> bool:
        """Ping if a ping is due and the worker is healthy; True when one was sent."""
        if not self.enabled:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.period:
            return False
        ok, problem = self.healthy()
        if not ok:
            if problem != self.last_problem:
                log.error("unhealthy, not feeding the systemd watchdog: %s", problem)
            self.last_problem = problem
            return False
        self.last_problem = None
        self._last = now
        return self.notifier.send("WATCHDOG=1")
