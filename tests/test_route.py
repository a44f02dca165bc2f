"""Routing: every reason on small synthetic inputs through the route stage, and the same
decisions from `mailbot route --file` with the real classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailbot.classify.result import Classification, LabelScore
from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import Config, config_from_dict
from mailbot.fields import build_schema, extract_message
from mailbot.parse.mime import parse_message
from mailbot.pipeline.case import Case
from mailbot.resources import data_dir
from mailbot.route import RouteDecision, RouteStage, decide, thread_subject
from mailbot.route.decision import HUMAN, LLM, SKIP, SLM, RouteReason
from tests.support.mail import support_email

SAMPLES = data_dir() / "samples"


def label(name: str, confidence: float = 0.95) -> LabelScore:
    return LabelScore(name, confidence, None, 1.0 - confidence)


def classification(intent: str = "order_status", confidence: float = 0.95, *,
                   priority: str = "normal", sentiment: str = "neutral",
                   sentiment_confidence: float = 0.95, oos: bool = False) -> Classification:
    return Classification(
        intent=label(intent, confidence), priority=label(priority),
        sentiment=label(sentiment, sentiment_confidence), language="en",
        out_of_scope_score=0.9 if oos else 0.1, out_of_scope=oos, model="test",
        model_version="1", head_version="1", truncated=False)


def route(body: str = "Where is my order A10234? It has not arrived.", *,
          config: dict[str, Any] | None = None, llm: bool = True,
          sender: str = "Emma Clarke <emma.clarke@example.com>", subject: str | None = None,
          account: str | None = "local", **kwargs: Any) -> RouteDecision:
    """Route one synthetic email through the stage (no database: no thread history)."""
    cfg = config_from_dict({"drafts": {"support_address": "support@northwind.example"},
                            **(config or {})})
    message = parse_message(support_email(1, body=body, sender=sender, subject=subject))
    intent = kwargs.pop("intent", "order_status")
    generated = kwargs.pop("generate", None)
    _, extraction = extract_message(message, build_schema(cfg.fields), intent=intent)
    case = Case(message_pk=0, raw=b"", account=account, message=message,
                classification=classification(intent, **kwargs), extraction=extraction,
                generated=generated)
    step = RouteStage(cfg, llm_available=llm).run(case)
    decision = step.case.decision
    assert decision is not None and step.details == decision.to_json()
    return decision


def test_a_plain_confident_case_stays_on_the_small_model() -> None:
    decision = route()
    assert decision.route == SLM and decision.reasons == ()


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"confidence": 0.3}, "low_confidence"),
    ({"oos": True}, "out_of_scope"),
    ({"intent": "refund", "body": "I sent the boots back, please refund me.",
      "subject": "Refund please", "config": {"route": {"missing_fields": "llm"}}},
     "missing_fields"),
    ({"body": "Order A10234 never came. My lawyer will take you to court."}, "legal_threat"),
    ({"body": "Please delete my personal data from all your systems (GDPR)."},
     "data_protection"),
    ({"body": "Sehr geehrte Damen und Herren, ich bitte um Auskunft nach Art. 15 DSGVO."},
     "data_protection"),
    ({"intent": "cancellation", "body": "Please cancel our company account; the annual "
      "contract is 12,000.00 EUR."}, "large_cancellation"),
    ({"priority": "high", "sentiment": "negative", "body": "This is UNACCEPTABLE. Order "
      "A10234 is two weeks late and NOBODY answers."}, "angry_high_priority"),
    ({"config": {"route": {"vip_domains": ["example.com"]}}}, "vip_sender"),
    ({"config": {"route": {"vip_senders": ["emma.clarke@example.com"]}}}, "vip_sender"),
    ({"body": "Where is order A10234? When does it ship? Can I change the colour? Is there "
      "a discount? Do you ship to Norway?"}, "long_email"),
    ({"body": "Where is order A10234? " + "More detail here. " * 140}, "long_email"),
])
def test_each_escalation_reason(kwargs: dict[str, Any], code: str) -> None:
    decision = route(**kwargs)
    assert decision.route == LLM
    assert code in decision.codes
    [reason] = [r for r in decision.reasons if r.code == code]
    assert reason.text and reason.action == LLM


def test_a_failed_generator_draft_escalates() -> None:
    class Generated:
        passed = False
        gates = {"avg_logprob": -3.1, "leftover_placeholders": 1}

    decision = route(generate=Generated())
    assert decision.codes == ["generation_failed"]
    assert decision.reasons[0].details["gates"]["avg_logprob"] == -3.1


def test_calm_complaints_and_small_cancellations_stay_local() -> None:
    calm = route(priority="high", sentiment="negative",
                 body="The app crashes when I open the cart on Android 14.")
    small = route(intent="cancellation", body="Please cancel order A10402 (249.00 EUR).")
    assert calm.route == SLM and small.route == SLM


def test_each_reason_can_be_switched_off_or_sent_to_a_person() -> None:
    legal = "My lawyer will take you to court over order A10234."
    assert route(body=legal, config={"route": {"legal_threat": "off"}}).route == SLM
    decision = route(body=legal, config={"route": {"legal_threat": "human"}})
    assert decision.route == HUMAN and decision.codes == ["legal_threat"]


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"llm": False}, "llm_not_configured"),
    ({"config": {"route": {"no_cloud": ["local"]}}}, "no_cloud"),
    ({"config": {"route": {"no_cloud": ["local/files"]}}}, "no_cloud"),
])
def test_escalations_go_to_a_person_when_the_cloud_is_not_an_option(
    kwargs: dict[str, Any], code: str
) -> None:
    decision = route(confidence=0.2, **kwargs)
    assert decision.route == HUMAN
    assert decision.codes == ["low_confidence", code]
    assert decision.summary().startswith("needs a person: ")


def test_a_mailbox_rule_fails_closed_when_the_mailbox_is_unknown() -> None:
    # Without a ledger (`mailbot route --file`) the mailbox is unknown: keep the data home.
    decision = route(confidence=0.2, config={"route": {"no_cloud": ["local/other"]}})
    assert decision.codes == ["low_confidence", "no_cloud"]
    other = route(confidence=0.2, config={"route": {"no_cloud": ["sales/INBOX"]}})
    assert other.route == LLM


@pytest.mark.parametrize("sender", ["noreply@shop.example", "support@northwind.example"])
def test_machine_senders_and_our_own_address_are_skipped(sender: str) -> None:
    decision = route(sender=sender, confidence=0.1)
    assert decision.route == SKIP and len(decision.reasons) == 1


def test_decide_orders_skip_human_llm_slm() -> None:
    llm = RouteReason("low_confidence", "unsure", LLM)
    human = RouteReason("legal_threat", "lawyer", HUMAN)
    block = RouteReason("no_cloud", "stay home", HUMAN)
    assert decide([], cloud_block=block).route == SLM
    assert decide([llm], cloud_block=None).route == LLM
    assert decide([llm], cloud_block=block).codes == ["low_confidence", "no_cloud"]
    assert decide([llm, human], cloud_block=None).route == HUMAN


def test_thread_subjects_ignore_reply_prefixes() -> None:
    assert thread_subject("RE: AW: Fwd: [Ticket #12] Where is my order?") == \
        "where is my order?"


# --- mailbot route --file, with the real classifier --------------------------------------


@pytest.fixture()
def route_cli(tmp_path: Path, encoder_dir: Path, fake_llm: Any) -> Any:
    def run(raw: bytes, llm: bool = True, **route_settings: Any) -> dict[str, Any]:
        lines = [f'data_dir = "{tmp_path / "var"}"', "[models]", f'dir = "{encoder_dir.parent}"',
                 "[drafts]", 'support_address = "support@northwind.example"']
        if llm:
            lines += ["[llm]", f'base_url = "{fake_llm.base_url}"', 'model = "fake-model"']
        lines.append("[route]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in route_settings.items()]
        config = tmp_path / "mailbot.toml"
        config.write_text("\n".join(lines) + "\n")
        mail = tmp_path / "mail.eml"
        mail.write_bytes(raw)
        result = CliRunner().invoke(cli, ["--config", str(config), "route", "--file", str(mail)])
        assert result.exit_code == 0, result.output
        return json.loads(result.output[result.output.index("{"):])

    yield run
    assert fake_llm.requests == []  # routing alone never calls the cloud


def email(body: str, sender: str = "Sam Lee <sam.lee@example.com>", subject: str | None = None
          ) -> bytes:
    return support_email(7, body=body, sender=sender, subject=subject or "Help")


CLI_CASES = [
    # The seed heads are fairly sure (about 0.75) the bulk-order quote is a product question.
    ((SAMPLES / "13_thread_reply.eml").read_bytes(), {"min_intent_confidence": 0.85},
     "low_confidence"),
    (email("Can you write me a poem about the ocean? And what is the capital of Mongolia?",
           subject="Quick question"), {}, "out_of_scope"),
    (email("I sent the hiking boots back last week, please refund me.",
           subject="Refund please"), {"missing_fields": "llm"}, "missing_fields"),
    (email("Order A10234 never arrived. My lawyer will sue you if it is not here Friday."),
     {}, "legal_threat"),
    (email("Auskunft nach Art. 15 DSGVO: welche Daten speichern Sie über mich?"), {},
     "data_protection"),
    (email("Please cancel our corporate account at the end of the month. Our annual "
           "contract is worth 12,000 EUR.", subject="Cancel our account"), {},
     "large_cancellation"),
    ((SAMPLES / "09_complaint_angry.eml").read_bytes(), {}, "angry_high_priority"),
    ((SAMPLES / "01_order_status.eml").read_bytes(), {"vip_domains": ["example.com"]},
     "vip_sender"),
    (email("Where is order A10234? Can I change the size? Do you ship to Norway? Is there a "
           "student discount? Can I pay by invoice?"), {}, "long_email"),
]


@pytest.mark.parametrize(("raw", "settings", "code"), CLI_CASES,
                         ids=[case[2] for case in CLI_CASES])
def test_route_command_names_each_reason(route_cli: Any, raw: bytes, settings: dict[str, Any],
                                         code: str) -> None:
    out = route_cli(raw, **settings)
    assert out["route"] == "llm", out
    assert code in out["codes"]
    assert all(r["text"] for r in out["reasons"])


def test_route_command_easy_mail_and_no_llm(route_cli: Any) -> None:
    easy = route_cli((SAMPLES / "01_order_status.eml").read_bytes())
    assert easy["route"] == "slm" and easy["reasons"] == []
    assert easy["intent"]["label"] == "order_status"
    hard = route_cli((SAMPLES / "09_complaint_angry.eml").read_bytes(), llm=False)
    assert hard["route"] == "human"
    assert hard["codes"] == ["angry_high_priority", "llm_not_configured"]
    bounce = route_cli((SAMPLES / "15_bounce.eml").read_bytes())
    assert bounce["route"] is None and bounce["stopped_at"] == "parse"
    assert "bounce" in bounce["reason"]


def test_route_command_reports_a_missing_file(tmp_path: Path, capsys: Any) -> None:
    code = run_cli(cli, ["route", "--file", str(tmp_path / "nope.eml")])
    err = capsys.readouterr().err
    assert code == 66 and "nope.eml: no such file" in err and "Traceback" not in err


def config_for(tmp_path: Path, encoder_dir: Path, **sections: Any) -> Config:
    """A config with a SQLite ledger under tmp_path (shared by the other route tests)."""
    base: dict[str, Any] = {
        "data_dir": str(tmp_path / "var"),
        "database": {"url": f"sqlite:///{tmp_path / 'mailbot.db'}"},
        "models": {"dir": str(encoder_dir.parent)},
        "drafts": {"support_address": "support@northwind.example",
                   "company": "Northwind Outfitters"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return config_from_dict(base)


PLAIN = [support_email(i, body="Where is my order A10234?") for i in range(400)]


def _sampled(share: float, *, llm: bool = True) -> list[RouteDecision]:
    cfg = config_from_dict({"drafts": {"support_address": "support@northwind.example"},
                            "route": {"quality_sample": share}})
    stage = RouteStage(cfg, llm_available=llm)
    decisions = []
    for i, raw in enumerate(PLAIN):
        message = parse_message(raw)
        case = Case(message_pk=i, raw=b"", account="local", message=message,
                    classification=classification())
        decision = stage.run(case).case.decision
        assert decision is not None
        decisions.append(decision)
    return decisions


def test_a_quality_sample_of_plain_mail_goes_to_the_cloud_and_the_same_mail_each_time() -> None:
    assert all(d.route == SLM for d in _sampled(0.0))
    first, again = _sampled(0.1), _sampled(0.1)
    sampled = [i for i, d in enumerate(first) if d.route == LLM]
    assert [i for i, d in enumerate(again) if d.route == LLM] == sampled
    assert 20 <= len(sampled) <= 60  # about 10% of 400
    assert {tuple(first[i].codes) for i in sampled} == {("quality_sample",)}
    assert all(first[i].reasons[0].text for i in sampled)
    # A larger share keeps the mail a smaller one chose (the hash is compared with it).
    assert set(sampled) <= {i for i, d in enumerate(_sampled(0.3)) if d.route == LLM}


def test_the_quality_sample_never_sends_mail_to_a_person() -> None:
    # Without a cloud LLM the sample is dropped: plain mail stays with the small model.
    assert all(d.route == SLM and d.reasons == () for d in _sampled(0.5, llm=False))
    # Mail that escalates for a real reason is not also marked as sampled.
    assert "quality_sample" not in route(confidence=0.3, config={
        "route": {"quality_sample": 1.0}}).codes
