"""The review desk's Flask application: login, the queue, the message page, admin pages.

Security: every POST carries a CSRF token (Flask-WTF); session cookies are HttpOnly,
SameSite=Lax and Secure behind https; every page has a CSP of `default-src 'self'` and no
inline script; failed logins are rate-limited; after login only a path on this site is
followed. Templates escape everything (autoescape is on for every template).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import select

from mailbot.config import Config
from mailbot.db.models import Message
from mailbot.db.session import Database
from mailbot.db.web import Role, WebUser
from mailbot.errors import ConfigError
from mailbot.web import auth
from mailbot.web.message import build_view, claim_active, label_choices
from mailbot.web.queue import (
    TABS,
    QueueFilter,
    filter_choices,
    index_new,
    queue_rows,
    tab_counts,
    visible_mailboxes,
)

log = logging.getLogger(__name__)

INDEX_SECONDS = 5.0  # new queue items appear in the filters within this long
CHOICES_SECONDS = 30.0
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")


def secret_key(config: Config) -> str:
    """The key that signs sessions: from the environment or a file, else one kept in the
    data directory (made on first start, readable by mailbot only)."""
    web = config.web
    if web.secret_key_env:
        value = os.environ.get(web.secret_key_env)
        if not value:
            raise ConfigError(f"web.secret_key_env: environment variable "
                              f"{web.secret_key_env!r} is not set; export it or use "
                              "secret_key_file")
        return value
    if web.secret_key_file:
        path = Path(web.secret_key_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"web.secret_key_file: cannot read {str(path)!r} "
                              f"({exc.strerror})") from None
        if len(value) < 16:
            raise ConfigError(f"web.secret_key_file: {str(path)!r} holds fewer than 16 "
                              "characters; put a long random key there")
        return value
    path = config.data_path / "web-secret-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip()


class _DeskFlask(Flask):
    # Every template escapes what it prints (Flask would do so only for *.html names).
    jinja_options = {**Flask.jinja_options, "autoescape": True}


def create_app(config: Config, database: Database) -> Flask:
    """The desk as a WSGI application."""
    from mailbot.resources import templates_dir

    app = _DeskFlask("mailbot.web", template_folder=str(templates_dir() / "web"),
                static_folder=str(Path(__file__).parent / "static"))
    app.config.update(
        SECRET_KEY=secret_key(config),
        SESSION_COOKIE_NAME="mailbot_desk",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.web.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=config.web.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # valid as long as the session
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
    )
    CSRFProtect(app)
    from mailbot.ingest.lease import worker_identity

    app.extensions["mailbot"] = {"config": config, "database": database,
                                 "owner": worker_identity(),
                                 "limiter": auth.LoginLimiter(database,
                                                              config.web.login_attempts,
                                                              config.web.login_window_seconds)}
    _install_hooks(app, config, database)
    _install_pages(app, config, database)
    from mailbot.web.actions import install_actions

    install_actions(app, config, database)
    from mailbot.web.dashboard import install_dashboard
    from mailbot.web.metrics import install_metrics

    install_dashboard(app, config, database)
    install_metrics(app, config, database)
    return app


def _install_hooks(app: Flask, config: Config, database: Database) -> None:
    @app.before_request
    def load_user() -> None:
        g.user = None
        if config.web.trusted_header and auth.from_trusted_proxy(
                request.remote_addr, config.web.trusted_proxies):
            name = request.headers.get(config.web.trusted_header, "").strip()
            if name:
                with database.session() as s:
                    user = s.scalar(select(WebUser).where(WebUser.name == name))
                    g.user = auth.current_from(user) if user is not None else None
                return
        uid, epoch = session.get("uid"), session.get("epoch")
        if uid is None:
            return
        with database.session() as s:
            user = s.get(WebUser, uid)
            if user is None or user.session_epoch != epoch:
                session.clear()
                return
            g.user = auth.current_from(user)

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError) -> Any:
        return render_template("error.html.j2", code=400,
                               message="The form was out of date or not sent from the desk "
                               "(missing or wrong CSRF token). Reload the page and try again."
                               ), 400

    @app.errorhandler(403)
    def forbidden(_error: Any) -> Any:
        return render_template("error.html.j2", code=403,
                               message="Your role does not allow this page."), 403

    @app.errorhandler(404)
    def not_found(_error: Any) -> Any:
        return render_template("error.html.j2", code=404, message="No such page."), 404

    @app.context_processor
    def common() -> dict[str, Any]:
        return {"user": g.get("user"), "tabs": TABS, "Role": Role}


def _install_pages(app: Flask, config: Config, database: Database) -> None:
    limiter: auth.LoginLimiter = app.extensions["mailbot"]["limiter"]
    # The filter menus and the queue's index change slowly: refreshed every few seconds at
    # most, not on every page.
    refreshed = {"index": 0.0, "choices": 0.0}
    cached: dict[str, Any] = {}

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        target = auth.safe_next(request.values.get("next"))
        if request.method == "GET":
            return render_template("login.html.j2", next=target)
        name = request.form.get("username", "").strip()[:200]
        password = request.form.get("password", "")
        address = request.remote_addr or "?"
        wait = limiter.blocked(name, address)
        if wait > 0:
            return render_template("login.html.j2", next=target, error=(
                f"Too many failed logins; try again in {int(wait) + 1} seconds.")), 429
        with database.session() as s:
            user = auth.verify_login(s, name, password)
            found = (user.id, user.session_epoch) if user is not None else None
        if found is None:
            limiter.failed(name, address)
            log.info("failed desk login for %r from %s", name, address)
            return render_template("login.html.j2", next=target,
                                   error="Wrong user name or password."), 401
        limiter.succeeded(name)
        session.clear()
        session.permanent = True
        session["uid"], session["epoch"] = found
        return redirect(target)

    @app.get("/favicon.ico")
    def favicon() -> Any:
        return "", 204

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    @auth.require(Role.AGENT)
    def queue() -> Any:
        wanted = QueueFilter.from_args(request.args)
        now = time.monotonic()
        if now - refreshed["index"] > INDEX_SECONDS:
            with database.session() as s:
                index_new(s)
            refreshed["index"] = now
        with database.session() as s:
            mailboxes = visible_mailboxes(s, g.user)
            counts = tab_counts(s, g.user, mailboxes)
            rows = queue_rows(s, g.user, wanted, mailboxes, config.web.page_size)
            if now - refreshed["choices"] > CHOICES_SECONDS:
                cached["choices"] = filter_choices(s)
                refreshed["choices"] = now
            choices = cached["choices"]
        template = "queue_table.html.j2" if request.headers.get("HX-Request") else "queue.html.j2"
        return render_template(template, rows=rows, counts=counts, wanted=wanted,
                               mailboxes=mailboxes, choices=choices)

    @app.get("/messages/<int:pk>")
    @auth.require(Role.AGENT)
    def message_page(pk: int) -> Any:
        with database.session() as s:
            message, mailbox = _visible_message(s, pk)
            view = build_view(s, message, mailbox)
        return render_template("message.html.j2", v=view, choices=label_choices(),
                               claimed=claim_active(view.claim),
                               llm=config.llm.enabled)

    @app.get("/admin/users")
    @auth.require(Role.ADMIN)
    def users() -> Any:
        with database.session() as s:
            rows = list(s.scalars(select(WebUser).order_by(WebUser.name)))
        return render_template("users.html.j2", users=rows, roles=[r.value for r in Role])

    @app.post("/admin/users")
    @auth.require(Role.ADMIN)
    def users_change() -> Any:
        name = request.form.get("name", "")
        try:
            with database.session() as s:
                if request.form.get("do") == "remove":
                    if name == g.user.name:
                        raise auth.UserError("you cannot remove yourself")
                    auth.remove_user(s, name)
                else:
                    auth.add_user(s, name, request.form.get("role", "agent"),
                                  request.form.get("password", ""))
        except auth.UserError as exc:
            flash(str(exc), "error")
        return redirect(url_for("users"))


def _visible_message(s: Any, pk: int) -> tuple[Message, str]:
    """The message, if this user may see it (404 otherwise)."""
    message = s.get(Message, pk)
    if message is None:
        abort(404)
    names = dict(visible_mailboxes(s, g.user))
    if message.mailbox_id not in names:
        abort(404)
    return message, names[message.mailbox_id]
