"""Cost saving of the router: `mailbot report cost` after ingesting mail through the full
pipeline with a cloud LLM configured (the local fake speaking the OpenAI protocol).

Ingests the shipped sample emails (and any further .eml folders given) at the default route
settings, then prints the cost report (spent against the same mail sent entirely to the cloud
model), how many messages took each route, and every reason given.

    .venv/bin/python bench/cost_saving.py [--models DIR] [--reply-chars 700] [--routine N]
                                          [FOLDER ...]

`--every-reason` adds one email for each escalation reason that is on by default (out of
scope, legal threat, data protection, large cancellation, VIP sender, long multi-question
mail, the third message of a thread; the samples already have low confidence and an angry
customer with high priority).

`--routine N` adds N routine emails from the tests' mail builder (order status, double
charge, login, app crash), for a mix closer to a real inbox than the samples, which are
chosen to show hard cases (2 of the 14 that need an answer are escalated).

The fake's reply to an escalated email is `--reply-chars` long (about 175 tokens by default,
a typical support reply), so the cloud side is not flattered by a short canned answer.
Target: a saving of at least 95 % against all-cloud.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner  # noqa: E402
from sqlalchemy import select  # noqa: E402

from mailbot.cli import cli  # noqa: E402
from mailbot.db.models import Event  # noqa: E402
from mailbot.db.session import Database  # noqa: E402
from mailbot.resources import data_dir  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, Reply, default_answer  # noqa: E402
from tests.support.mail import support_email  # noqa: E402

REPLY = ("Thank you for getting in touch, and I am sorry for the trouble this has caused. "
         "I have looked into your message and passed the details to the team responsible, "
         "who will check what happened and get back to you with a solution as soon as "
         "possible. If anything else comes up in the meantime, simply reply to this e-mail "
         "and we will add it to your case. ")


VIP = "ceo@bigcustomer.example"


def reason_emails() -> list[bytes]:
    """One email per escalation reason that is on by default; the samples already hold a
    low-confidence one (13) and an angry, high-priority one (09)."""
    def mail(n: int, body: str, **kwargs: object) -> bytes:
        return support_email(2000 + n, body=body, **kwargs)  # type: ignore[arg-type]

    thread = [
        mail(10 + i, f"Order A10999 still has not arrived ({i + 1}).",
             subject="My order A10999" if i == 0 else "Re: My order A10999",
             sender="Kim Park <kim.park@example.org>")
        for i in range(3)
    ]
    return [
        mail(1, "Can you write me a poem about the ocean? And what is the capital of "
                "Mongolia?", subject="Quick question"),
        mail(2, "Order A10234 never arrived. My lawyer will sue you if it is not here by "
                "Friday."),
        mail(3, "Please delete all my personal data from your systems under the GDPR.",
             subject="Data deletion request"),
        mail(4, "Please cancel our corporate account at the end of the month. Our annual "
                "contract is worth 12,000 EUR.", subject="Cancel our account"),
        mail(5, "Where is order A10234?", sender=f"Dana Cole <{VIP}>"),
        mail(6, "Where is order A10234? Can I change the size? Do you ship to Norway? Is "
                "there a student discount? Can I pay by invoice?"),
        *thread,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="More .eml folders to ingest.")
    parser.add_argument("--models", type=Path, default=Path("var/models"),
                        help="Models directory holding the prepared encoder.")
    parser.add_argument("--reply-chars", type=int, default=700)
    parser.add_argument("--routine", type=int, default=0,
                        help="Also ingest this many routine test emails.")
    parser.add_argument("--every-reason", action="store_true",
                        help="Also ingest one email for each escalation reason that is on by "
                             "default (a VIP sender is configured for it).")
    args = parser.parse_args()

    server = FakeOpenAI().start()
    reply = (REPLY * (args.reply_chars // len(REPLY) + 1))[: args.reply_chars]
    server.default = lambda r: default_answer(r) if r.schema else Reply(content=reply)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "mailbot.toml"
            config.write_text("\n".join([
                f'data_dir = "{tmp}"', "[models]", f'dir = "{args.models.resolve()}"',
                "[drafts]", 'support_address = "support@northwind.example"',
                "[route]", f'vip_senders = ["{VIP}"]',
                "[llm]", f'base_url = "{server.base_url}"', 'model = "fake-model"', "",
            ]))
            runner = CliRunner()
            folders = [data_dir() / "samples", *args.folders]
            if args.routine:
                routine = Path(tmp) / "routine"
                routine.mkdir()
                for n in range(args.routine):
                    (routine / f"{n:05d}.eml").write_bytes(support_email(1000 + n))
                folders.append(routine)
            if args.every_reason:
                hard = Path(tmp) / "reasons"
                hard.mkdir()
                for n, raw in enumerate(reason_emails()):
                    (hard / f"{n:02d}.eml").write_bytes(raw)
                folders.append(hard)
            done = runner.invoke(cli, ["--config", str(config), "ingest",
                                       *map(str, folders)])
            print(done.output.strip())
            report = runner.invoke(cli, ["--config", str(config), "report", "cost"])
            print(report.output.strip())
            database = Database(f"sqlite:///{tmp}/mailbot.db")
            with database.session() as session:
                routes = session.scalars(select(Event).where(Event.stage == "route")).all()
            print("\nroutes:", json.dumps(Counter(e.outcome for e in routes)))
            print("reasons:", json.dumps(Counter(c for e in routes for c in e.details["codes"])))
            print(f"cloud requests: {len(server.chat_requests)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
