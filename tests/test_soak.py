"""A small soak: two real workers on PostgreSQL and Dovecot while faults land at random.

The full-size run is bench/soak.py (10,000 messages); this one keeps the suite's time."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, corpus
from tests.support.fake_openai import FakeOpenAI
from tests.support.faults import FaultDriver, FlakyCloud, deliver_over_time


@pytest.mark.slow
def test_every_message_exactly_once_under_faults(
    dovecot: Any, postgres_url: str, encoder_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(5)
    llm = FakeOpenAI()
    cloud = FlakyCloud(random.Random(6), rate=0.2)
    llm.default = cloud
    llm.start()
    # Room for about two thirds of the escalations' calls: the rest go to a person.
    cluster = Cluster(dovecot, llm, postgres_url, encoder_dir.parent, work_dir=tmp_path / "c",
                      concurrency=2, daily_budget=0.045, route={"llm_classify": "always"},
                      llm_settings={"read_timeout": 2.0},
                      worker={"lease_seconds": 10, "claim_seconds": 15})
    driver = FaultDriver(cluster, rng, every=2.5)
    try:
        for _ in range(2):
            cluster.start_worker()
        driver.start()
        deliver_over_time(cluster, corpus(90, seed=3), chunks=6, pause=2.0)
        time.sleep(8)
        driver.stop()
        while len(cluster.live_workers()) < 2:
            cluster.start_worker()
        settled = cluster.wait_settled(300, poll=1.0)
        cluster.stop_all()
        tally = cluster.tally()
    finally:
        if driver.is_alive():
            driver.stop()
        cluster.stop_all()
        llm.stop()
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in cluster.dir.glob("*.log"))
    assert settled, (tally, logs)
    assert sum(driver.counts.values()) >= 5, driver.counts  # faults really landed
    assert (tally.messages, tally.ledger, tally.duplicates) == (90, 90, 0), tally
    assert tally.drafted > 30 and tally.drafts_missing == 0 and tally.drafts_extra == 0, tally
    assert tally.paid_twice == 0 and tally.budget_overrun == 0.0, tally
    assert tally.stuck == 0, tally
    shutil.rmtree(cluster.dir, ignore_errors=True)
