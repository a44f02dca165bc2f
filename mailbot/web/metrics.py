"""`/metrics` and `/healthz` in the desk process (`web.metrics`), and the desk's own counters.

The desk serves the same figures as the worker's listener (`mailbot.audit.metrics`): the
queue, drafts awaiting review, the outbox and each mailbox's last poll, read from the
database at scrape time, so the two processes agree; and what only the desk knows: its
requests by page, method and status, and how long they took.

Who may read them: only the addresses in `web.metrics_allow`, and never a request that came
through a reverse proxy (it carries Forwarded, X-Forwarded-For or X-Real-IP). A proxy on the
same host would otherwise make every visitor look like loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, g, request
from prometheus_client import Counter, Histogram

from mailbot.audit.metrics import WSGIApp, metrics_app
from mailbot.config import Config
from mailbot.db.session import Database

log = logging.getLogger(__name__)

PATHS = ("/metrics", "/healthz")
PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")
# Seconds; a desk page takes milliseconds, a send through a slow relay a few seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WEB_REQUESTS = Counter("mailbot_web_requests", "Requests the review desk answered, by page "
                       "(the Flask endpoint), method and status code.",
                       ["endpoint", "method", "status"])
WEB_LATENCY = Histogram("mailbot_web_request_seconds", "How long the review desk took to "
                        "answer, by page.", ["endpoint"], buckets=REQUEST_BUCKETS)


class MetricsMount:
    """WSGI middleware: `/metrics` and `/healthz` for allowed scrapers, the desk otherwise."""

    def __init__(self, desk: WSGIApp, metrics: WSGIApp, allow: Iterable[str]) -> None:
        self.desk = desk
        self.metrics = metrics
        self.allow = [ipaddress.ip_network(a, strict=False) for a in allow]

    def allowed(self, environ: dict[str, Any]) -> bool:
        """Whether this request may read the metrics (see the module's docstring)."""
        if any(environ.get(h) for h in PROXY_HEADERS):
            return False
        try:
            address = ipaddress.ip_address(environ.get("REMOTE_ADDR") or "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") not in PATHS:
            return self.desk(environ, start_response)
        if not self.allowed(environ):
            log.info("metrics: refused %s from %s", environ.get("PATH_INFO"),
                     environ.get("REMOTE_ADDR"))
            body = b"forbidden: this address may not read the metrics (web.metrics_allow)\n"
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                              ("Content-Length", str(len(body)))])
            return [body]
        return self.metrics(environ, start_response)


def install_metrics(app: Flask, config: Config, database: Database) -> None:
    """Mount `/metrics` and `/healthz` and count the desk's requests, when `web.metrics`."""
    if not config.web.metrics:
        return

    @app.before_request
    def started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def counted(response: Any) -> Any:
        endpoint = request.endpoint or "unknown"  # a 404 has none; never the raw path
        WEB_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        began = g.get("metrics_started")
        if began is not None:
            WEB_LATENCY.labels(endpoint).observe(time.perf_counter() - began)
        return response

    served = metrics_app(database, cache_seconds=config.metrics.cache_seconds)
    app.wsgi_app = MetricsMount(app.wsgi_app, served,  # type: ignore[method-assign]
                                config.web.metrics_allow)
