"""The managers' dashboard in a real browser: a manager logs in, opens the dashboard, filters
by mailbox and downloads a chart's data; the SVG charts are drawn, nothing breaks the CSP
and no script error appears. Runs on SQLite and PostgreSQL against a real `mailbot web` and
Debian's chromium, with a synthetic month of audit data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailbot.audit.reports import store_prices
from mailbot.config import CostSettings
from mailbot.db.artifacts import Artifact
from mailbot.db.models import Account, Mailbox, Message
from mailbot.db.session import Database
from tests.support.audit_data import synthesize
from tests.support.database import PG_ADMIN_URL, _pg_admin_connect, _pg_or_skip
from tests.support.desk import DeskProcess, mailbot, require_chromium
from tests.test_desk_browser import browser, open_page  # noqa: F401 - fixtures

pytestmark = [pytest.mark.timeout(600)]

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
MANAGER, MANAGER_PASSWORD = "mona", "mona-password-1"
PRICES = CostSettings(currency="EUR", llm_input_per_million=2.5, llm_output_per_million=10.0,
                      chars_per_token=4.0, prompt_overhead_tokens=350, typical_output_tokens=180)
# Records what the CSP refused; an init script runs before the page's own (and outside it).
CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


@dataclass
class Dashboard:
    kind: str
    web: DeskProcess
    database: Database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dashboard(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A month of synthetic mail, a promoted intent head, a manager, and the desk."""
    require_chromium()
    directory = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'mailbot.db'}"
    else:
        _pg_or_skip()
        pg_name = f"mailbot_dash_{uuid.uuid4().hex[:10]}"
        with _pg_admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"
    database = Database(url)
    database.upgrade()
    now = datetime.now(UTC)
    with database.session() as session:
        store_prices(session, PRICES)
        synthesize(session, 900, seed=23, days=28, end=now)
        session.add(Artifact(kind="head", name="intent", version=f"{now:%Y%m%dT%H%M%S}-5be0c1",
                             path="heads/intent/x", promoted=True, created_at=now - timedelta(
                                 days=3), metrics={"source": "learn", "examples": 1840,
                                                   "cv_accuracy": 0.912, "learn": {"after": {
                                                       "accuracy": 0.897, "escalated": 0.118}}}))
    config = directory / "mailbot.toml"
    config.write_text(f'data_dir = "{directory / "var"}"\n[database]\nurl = "{url}"\n'
                      '[cost]\ncurrency = "EUR"\nllm_input_per_million = 2.5\n'
                      'llm_output_per_million = 10.0\nprompt_overhead_tokens = 350\n'
                      'typical_output_tokens = 180\n')
    added = mailbot(config, "user", "add", MANAGER, "--role", "manager", "--password-stdin",
                    stdin=MANAGER_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    web = DeskProcess(config, directory / "web.log").start()
    try:
        yield Dashboard(request.param, web, database)
    finally:
        web.stop()
        database.dispose()
        if pg_name:
            with _pg_admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def test_manager_opens_filters_and_downloads(dashboard: Dashboard, browser: Any,  # noqa: F811
                                             tmp_path: Path) -> None:
    w = open_page(browser)
    page = w.page
    page.add_init_script(CSP_WATCH)
    page.goto(dashboard.web.url + "/")
    page.fill("input[name=username]", MANAGER)
    page.fill("input[name=password]", MANAGER_PASSWORD)
    page.click("form.login button[type=submit]")
    page.click("header nav a:text-is('Dashboard')")
    page.wait_for_selector("figure[data-chart=volume] svg")
    for chart in ("volume", "automation", "escalations", "drafts", "edits", "cost"):
        svg = page.locator(f"figure[data-chart={chart}] svg")
        assert svg.is_visible(), chart
        box = svg.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100, (chart, box)
        assert page.locator(f"figure[data-chart={chart}] svg rect.mark").count() > 0, chart
    with dashboard.database.session() as s:
        since = datetime.now(UTC).date() - timedelta(days=29)
        total = sum(1 for m in s.scalars(select(Message))
                    if m.received_at.astimezone(UTC).date() >= since)
    assert page.locator(".tile-value").first.inner_text() == f"{total:,}"
    assert "seed head" not in page.locator("section[data-chart=models] tbody tr").first.inner_text()
    if dashboard.kind == "sqlite":
        page.screenshot(path=str(DOCS_IMG / "dashboard.png"), full_page=True)

    # Only one mailbox: the figures are that mailbox's.
    page.select_option("select[name=mailbox]", label="support/Billing")
    page.click("form.dashboard-filters button[type=submit]")
    page.wait_for_function("() => location.search.includes('mailbox=')")
    page.wait_for_selector("figure[data-chart=volume] svg")
    assert page.locator("p.range").inner_text().startswith("support/Billing,")
    with dashboard.database.session() as s:
        billing = s.scalar(select(Mailbox.id).join(Account).where(
            Account.name == "support", Mailbox.name == "Billing"))
        in_box = sum(1 for m in s.scalars(select(Message).where(Message.mailbox_id == billing))
                     if m.received_at.astimezone(UTC).date() >= since)
        assert s.scalar(select(func.count()).select_from(Message)) > in_box > 0
    assert page.locator(".tile-value").first.inner_text() == f"{in_box:,}"

    # A chart's CSV, with the same filter.
    with page.expect_download() as download:
        page.click("figure[data-chart=volume] a.csv")
    saved = tmp_path / "volume.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("day,messages,handled,")
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == in_box
    assert page.evaluate("window.__csp") == []
    assert w.errors == [] and w.dialogs == []
