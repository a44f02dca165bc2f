"""Configuration: read once at start-up from TOML, validated, then passed down.

Every problem is reported as a `ConfigError` that names the key, the value found and what
was expected, so an admin can fix the file without reading a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailbot.errors import ConfigError

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
DEFAULT_CONFIG_PATHS = ("./mailbot.toml", "/etc/mailbot/mailbot.toml")
CONFIG_ENV = "MAILBOT_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """Where the ledger and audit log live."""

    # Empty means SQLite in the data directory (`<data_dir>/mailbot.db`).
    url: str = ""
    echo: bool = False


class ModelSettings(_Section):
    """The small model runtime (CTranslate2)."""

    dir: str = "models"  # relative paths are taken from data_dir
    # A directory under `dir`: "all-MiniLM-L6-v2" (English) or "multilingual-e5-small", both
    # made by `mailbot model prepare --encoder NAME`, or one made by `mailbot model convert`.
    encoder: str = "all-MiniLM-L6-v2"
    generator: str = ""  # a converted generator's directory name; empty = none
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    intra_threads: Annotated[int, Field(ge=0)] = 0  # 0 = one per core
    inter_threads: Annotated[int, Field(ge=1)] = 1
    # all-MiniLM-L6-v2 was trained on 128-token inputs: the start of an email carries its
    # intent, and the encoder runs about 1.6x faster than at 256.
    max_input_tokens: Annotated[int, Field(ge=16, le=8192)] = 128
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    # Freed blocks up to this size stay with the process for reuse (engine.reuse_freed_memory).
    reuse_freed_memory_mb: Annotated[int, Field(ge=0, le=1024)] = 1024
    # The instruction set of CTranslate2's own CPU kernels (engine.choose_cpu_isa).
    cpu_isa: Literal["auto", "ctranslate2", "avx512", "avx2", "avx", "neon", "generic"] = "auto"

    @field_validator("encoder")
    @classmethod
    def _encoder_name(cls, value: str) -> str:
        # A name, not a path: heads and knowledge-base vectors record it, and
        # `mailbot model prepare --encoder NAME` creates the known ones under `dir`.
        if not _MODEL_NAME.fullmatch(value):
            raise ValueError(
                "expected the name of a model directory under models.dir (letters, digits, "
                "'.', '_', '-', '+'), e.g. all-MiniLM-L6-v2 or multilingual-e5-small"
            )
        return value


# An IMAP keyword or system flag: no spaces or IMAP specials.
_FLAG = r"^\\?[^\s()\]{%*\"]+$"


class SmtpSettings(_Section):
    """The relay an account's replies are sent through (`[accounts.smtp]`)."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # "starttls" (port 587), "implicit" TLS (port 465), or "plain" (loopback only, port 25).
    tls: Literal["starttls", "implicit", "plain"] = "starttls"
    tls_verify: bool = True
    # No username: the relay takes mail without logging in (a local relay).
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    password_file: str | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    # File a copy of each reply in the Sent folder (off for servers that do it themselves,
    # such as Gmail and Exchange).
    save_to_sent: bool = True
    # Empty: the folder the server marks \Sent (RFC 6154 SPECIAL-USE), else "Sent".
    sent_folder: str = ""
    # Show the agent's name in From ("Alice via Customer Support").
    agent_name_in_from: bool = False

    @model_validator(mode="after")
    def _check(self) -> SmtpSettings:
        sources = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        if len(sources) > 1:
            raise ValueError(f"set at most one of password_env, password_file or password "
                             f"(found {', '.join(sources)})")
        if self.username and not sources:
            raise ValueError("username is set but no password_env, password_file or password")
        if sources and not self.username:
            raise ValueError("a password is set but no username")
        if self.tls == "plain" and not _is_loopback(self.host):
            raise ValueError(
                f"tls = 'plain' sends mail and the password in clear and is allowed only for a "
                f"loopback host (127.0.0.1, ::1, localhost), not {self.host!r}; use 'starttls' "
                "or 'implicit'")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the SMTP submission default for the TLS mode."""
        if self.port is not None:
            return self.port
        return {"implicit": 465, "starttls": 587, "plain": 25}[self.tls]

    def resolve_password(self, account: str) -> str | None:
        """The relay password (None: no login)."""
        return _read_secret(f"accounts.{account}.smtp", self.password, self.password_env,
                            self.password_file)


class AccountSettings(_Section):
    """One IMAP account and the folders mailbot watches in it."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    tls: Literal["implicit", "starttls", "plain"] = "implicit"
    tls_verify: bool = True
    username: Annotated[str, Field(min_length=1)]
    # A secret: never shown in logs, reprs or error messages.
    password: SecretStr | None = None
    password_env: str | None = None
    password_file: str | None = None
    mailboxes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = [
        "INBOX"
    ]
    poll_interval: Annotated[float, Field(ge=1, le=86400)] = 60.0
    idle: bool = False
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_message_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024
    fetch_batch: Annotated[int, Field(ge=1, le=1000)] = 100
    # Most bytes one FETCH may bring (a message larger than this comes alone).
    fetch_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    # What happens on the server to mail mailbot is done with (drafted, auto-replies, ...).
    processed_action: Literal["none", "flag", "move"] = "none"
    processed_flag: Annotated[str, Field(min_length=1, pattern=_FLAG)] = "$MailbotProcessed"
    processed_folder: str = "Processed"
    # What happens to mail a person must handle (needs a person, failed, quarantined): by
    # default nothing, so it stays where agents look.
    attention_action: Literal["none", "flag", "move"] = "none"
    attention_flag: Annotated[str, Field(min_length=1, pattern=_FLAG)] = "$MailbotNeedsHuman"
    attention_folder: str = "Needs attention"
    # Empty: the folder the server marks \Drafts (RFC 6154 SPECIAL-USE), else "Drafts".
    drafts_folder: str = ""
    # Where the agents' mail client files what they send, read for outcomes ([outcomes]).
    # Empty: [accounts.smtp] sent_folder, else the folder the server marks \Sent, else "Sent".
    sent_folder: str = ""
    support_address: str | None = None
    # Where replies approved in the review desk are sent; none = the desk cannot send.
    smtp: SmtpSettings | None = None

    @model_validator(mode="after")
    def _check(self) -> AccountSettings:
        sources = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError(
                "set exactly one of password_env, password_file or password "
                f"(found {len(sources)}: {', '.join(sources) or 'none'})"
            )
        if self.tls == "plain" and not _is_loopback(self.host):
            raise ValueError(
                f"tls = 'plain' sends the password in clear and is allowed only for a loopback "
                f"host (127.0.0.1, ::1, localhost), not {self.host!r}; use 'implicit' or 'starttls'"
            )
        if len(set(self.mailboxes)) != len(self.mailboxes):
            raise ValueError("mailboxes lists a folder twice")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the IMAP default for the TLS mode."""
        if self.port is not None:
            return self.port
        return 993 if self.tls == "implicit" else 143

    def resolve_password(self) -> str:
        """Read the password from where the config says it lives."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"accounts.{self.name}.password_env: environment variable "
                    f"{self.password_env!r} is not set; export it or use password_file"
                )
            return value
        assert self.password_file is not None
        path = _expand_credentials(self.password_file)
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"accounts.{self.name}.password_file: cannot read {str(path)!r} "
                f"({exc.strerror}); check the path and that the mailbot user may read it"
            ) from None


class WorkerSettings(_Section):
    """How the daemon behaves."""

    # A mailbox lease older than this is taken over (its holder is presumed dead).
    lease_seconds: Annotated[float, Field(ge=10, le=86400)] = 300.0
    retry_base_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    retry_max_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    retry_attempts: Annotated[int, Field(ge=0, le=100)] = 5
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # A message whose processing fails this many times is quarantined with the reason (and
    # an outbox action that fails this many times is given up), so it never blocks others.
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    # A worker's claim on a message (or outbox row) expires after this long if the worker
    # dies; another one then takes it over.
    claim_seconds: Annotated[float, Field(ge=10, le=86400)] = 300.0
    # Messages taken through the stages together (one model batch, one commit).
    group_size: Annotated[int, Field(ge=1, le=1000)] = 20


class MetricsSettings(_Section):
    """The worker's `/metrics` (Prometheus) and `/healthz` listener; off by default."""

    enabled: bool = False
    # Loopback by default: the figures are for the admin's Prometheus, not the world.
    bind: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464
    # Database figures (queue, drafts awaiting review, polls) are re-read at most this often.
    cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 5.0


class ClassifierSettings(_Section):
    """Intent, priority and sentiment classification (see docs/classifier.md)."""

    # Run the classify stage (it needs the encoder: `mailbot model prepare`).
    enabled: bool = True
    # Share of in-scope mail allowed to be flagged out of scope; the threshold that gives
    # this rate is read from the intent head's held-out calibration data.
    oos_false_rejection: Annotated[float, Field(gt=0, lt=1)] = 0.05
    # A fixed out-of-scope threshold (0..1) instead of the calibrated one.
    oos_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    # Classify the intent with the generator (models.generator) by scoring each label.
    use_generator: bool = False
    # The labels the generator may choose from; empty = the intent head's labels.
    intents: list[Annotated[str, Field(min_length=1)]] = []
    # Seconds between checks of the database for a newly promoted head.
    refresh_seconds: Annotated[float, Field(ge=0, le=86400)] = 30.0
    # Folds of cross-validation used to calibrate heads when training.
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 5
    # Restrict language detection to these ISO 639-1 codes; empty = every language known.
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = []


class LLMSettings(_Section):
    """The cloud LLM for escalated mail: any OpenAI-compatible Chat Completions endpoint."""

    # Empty = no cloud LLM: escalated mail goes to a human with the reason.
    base_url: str = ""
    model: str = ""
    # Where the API key lives (at most one); none = send no key (local vLLM, Ollama).
    api_key_env: str | None = None
    api_key_file: str | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Attempts per call (1 = no retry); waits are capped exponential backoff with jitter.
    attempts: Annotated[int, Field(ge=1, le=20)] = 3
    retry_base_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    retry_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # A Retry-After longer than this ends the call at once (the endpoint counts as unavailable).
    max_retry_after_seconds: Annotated[float, Field(ge=0, le=86400)] = 60.0
    # The circuit breaker: after this many failed requests in a row, stop calling for a while.
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_cooldown_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0
    # Cloud calls a worker keeps in flight at once (they wait on the network, not the CPU).
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    # "json_schema" (strict structured output) or "json_object" for servers without schemas.
    structured_output: Literal["json_schema", "json_object"] = "json_schema"
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_output_tokens: Annotated[int, Field(ge=16, le=65536)] = 1024
    # Prompt templates; empty = the ones shipped in templates/prompts.
    prompts_dir: str = ""

    @model_validator(mode="after")
    def _check(self) -> LLMSettings:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set at most one of api_key_env or api_key_file")
        if self.base_url and not self.model:
            raise ValueError("model is required when base_url is set")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https://")
        if self.base_url.startswith("http://"):
            from urllib.parse import urlsplit

            host = urlsplit(self.base_url).hostname or ""
            if not _is_loopback(host):
                raise ValueError(
                    f"base_url {self.base_url!r} sends customer mail and the API key in clear; "
                    "plain http:// is allowed only for a loopback host (127.0.0.1, ::1, "
                    "localhost): use https://"
                )
        return self

    @property
    def enabled(self) -> bool:
        """Whether a cloud LLM is configured."""
        return bool(self.base_url)

    def resolve_api_key(self) -> str | None:
        """Read the API key from where the config says it lives (None: no key configured)."""
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"llm.api_key_env: environment variable {self.api_key_env!r} is not set; "
                    "export it or use api_key_file"
                )
            return value
        if self.api_key_file is not None:
            path = _expand_credentials(self.api_key_file)
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"llm.api_key_file: cannot read {str(path)!r} ({exc.strerror}); "
                    "check the path and that the mailbot user may read it"
                ) from None
        return None


class CostSettings(_Section):
    """Prices for cost accounting and the cloud LLM budget."""

    currency: Annotated[str, Field(min_length=1, max_length=8)] = "USD"
    # The cloud model's price per million input (prompt) and output (completion) tokens.
    llm_input_per_million: Annotated[float, Field(ge=0)] = 2.50
    llm_output_per_million: Annotated[float, Field(ge=0)] = 10.00
    # What one CPU-hour of the small model costs (machine price / cores).
    cpu_hour: Annotated[float, Field(ge=0)] = 0.05
    # For estimating tokens from text when none were counted.
    chars_per_token: Annotated[float, Field(gt=0, le=100)] = 4.0
    # The all-cloud estimate: instructions per call and a typical answer, in tokens.
    prompt_overhead_tokens: Annotated[int, Field(ge=0)] = 400
    typical_output_tokens: Annotated[int, Field(ge=0)] = 300
    # Cloud LLM spending limits; 0 = no limit. Days and months are counted in `timezone`.
    daily_budget: Annotated[float, Field(ge=0)] = 0.0
    monthly_budget: Annotated[float, Field(ge=0)] = 0.0
    timezone: Annotated[str, Field(min_length=1)] = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone name such as 'Europe/Berlin' or 'UTC'") from None
        return value


FieldType = Literal[
    "string", "integer", "money", "date", "email", "phone", "url", "enum", "pattern",
    "iban", "card", "person", "address", "place",
]  # fmt: skip


class FieldSpec(_Section):
    """One field of the extraction schema (the default: mailbot/data/fields/ecommerce.toml)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    type: FieldType
    # Regex of the value itself (pattern, string and integer fields), found after a cue word.
    pattern: str = ""
    # A stricter regex accepted anywhere, without a cue word (e.g. the shop's "A\d{5}").
    anywhere: str = ""
    # Words that introduce the value ("order", "Bestellung"); matched case-insensitively.
    cues: list[Annotated[str, Field(min_length=1)]] = []
    # Check digit the value must pass; a value that fails is rejected, never passed on.
    check: Literal["none", "luhn", "mod11", "mod97"] = "none"
    # Allowed values (enum fields; other fields: when set, the value must be one of them).
    values: list[Annotated[str, Field(min_length=1)]] = []
    # Intents for which a message must carry this field (listed as missing otherwise).
    required_for: list[Annotated[str, Field(min_length=1)]] = []

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        import re

        for key in ("pattern", "anywhere"):
            try:
                re.compile(getattr(self, key))
            except re.error as exc:
                raise ValueError(f"{key} is not a valid regular expression: {exc}") from None
        if self.type == "enum" and not self.values:
            raise ValueError("an enum field needs values = [...]")
        if self.type == "pattern" and not (self.pattern or self.anywhere):
            raise ValueError("a pattern field needs pattern or anywhere")
        return self


class FieldSettings(_Section):
    """Field extraction (order numbers, amounts, dates, ...) and pseudonymisation."""

    # Start from the built-in e-commerce schema; fields in `custom` add to or replace it.
    use_default_schema: bool = True
    custom: list[FieldSpec] = []
    # Intent -> fields it requires; replaces the schema's required_for for that intent.
    required: dict[str, list[str]] = {}
    # Languages for month names and relative dates ("7. März", "yesterday", "hier").
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = [
        "en", "de", "fr", "es", "it", "nl", "pt",
    ]  # fmt: skip
    # How to read an all-numeric date such as 03/07/2026 when either part could be the day.
    date_order: Literal["DMY", "MDY"] = "DMY"
    # Regions tried, in order, for phone numbers written without a +country code.
    phone_regions: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = [
        "US", "GB", "DE", "FR", "ES", "IT", "NL", "AT", "CH",
    ]  # fmt: skip
    # Values found with less confidence than this are dropped.
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Also ask the generator (models.generator) for the fields as JSON; values are validated.
    use_generator: bool = False
    # What the pseudonymiser replaces before a cloud call (card numbers are always masked).
    redact: list[
        Literal["PERSON", "EMAIL", "PHONE", "IBAN", "CARD", "ADDRESS", "ORDER", "URL", "ACCOUNT"]
    ] = ["PERSON", "EMAIL", "PHONE", "IBAN", "CARD", "ADDRESS", "ORDER", "ACCOUNT"]


class KnowledgeBaseSettings(_Section):
    """The knowledge base the drafts are grounded in (`mailbot kb`, see mailbot/kb)."""

    # Most words in one passage; longer sections are split at paragraphs, then sentences.
    passage_words: Annotated[int, Field(ge=20, le=400)] = 120
    # Passages and queries are embedded up to this many tokens (a passage of passage_words
    # words needs about 1.3 tokens a word).
    max_tokens: Annotated[int, Field(ge=16, le=8192)] = 256
    # Passages handed to the draft stage (and shown by `kb search` without --top).
    top_k: Annotated[int, Field(ge=1, le=100)] = 4
    # Ranking: (1 - w) * cosine similarity + w * BM25 keyword coverage; 0 = vectors only.
    keyword_weight: Annotated[float, Field(ge=0, le=1)] = 0.3
    # A passage less similar than this (cosine) is left out unless its keywords match well.
    min_similarity: Annotated[float, Field(ge=-1, le=1)] = 0.25
    # Seconds between checks of the database for passages another process added or removed.
    refresh_seconds: Annotated[float, Field(ge=0, le=86400)] = 10.0


class DraftSettings(_Section):
    """Reply drafting from the templates under templates/replies/."""

    enabled: bool = True
    company: str = "Example Shop"
    from_name: str = "Customer Support"
    signature: str = "Kind regards,\nCustomer Support"
    # Signatures for replies in other languages, by ISO 639-1 code (else `signature`).
    signatures: dict[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")], str] = {}
    # The From address of drafts when the account has no support_address and its username
    # is not an address (and for mail ingested from local files).
    support_address: str = ""
    # A folder whose replies/ templates override the shipped ones (same file names).
    templates_dir: str = ""
    # Also add a simple HTML part to each reply.
    html_alternative: bool = False
    # Knowledge-base passages scoring below this are not offered to the templates.
    min_passage_score: Annotated[float, Field(ge=0)] = 0.0
    # Let the generator (models.generator) write the reply body; the template is the fallback.
    use_generator: bool = False
    # Most tokens the generator may write for one reply body.
    generator_max_new_tokens: Annotated[int, Field(ge=16, le=4096)] = 384
    # A generated body shorter or longer than this (characters) is not used.
    min_chars: Annotated[int, Field(ge=0)] = 40
    max_chars: Annotated[int, Field(ge=1)] = 2000


RouteAction = Literal["llm", "human", "off"]


class RouteSettings(_Section):
    """Routing: which mail the small model answers, which goes to the cloud LLM or a person,
    and the safety checks every draft passes (see mailbot/route)."""

    enabled: bool = True
    # Escalate when the intent's calibrated confidence is below this.
    min_intent_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5
    # What each reason does: "llm" (escalate), "human" (no automatic draft) or "off".
    low_confidence: RouteAction = "llm"
    out_of_scope: RouteAction = "llm"
    generation_failed: RouteAction = "llm"
    missing_fields: RouteAction = "off"
    legal_threat: RouteAction = "llm"
    data_protection: RouteAction = "llm"
    large_cancellation: RouteAction = "llm"
    angry_high_priority: RouteAction = "llm"
    vip_sender: RouteAction = "llm"
    long_email: RouteAction = "llm"
    repeated_contact: RouteAction = "llm"
    # A cancellation mentioning an amount at least this large counts as a large account.
    large_cancellation_amount: Annotated[float, Field(ge=0)] = 1000.0
    # Negative sentiment at least this confident, high or urgent priority and a sign of anger.
    angry_min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.8
    vip_senders: list[Annotated[str, Field(min_length=3)]] = []
    vip_domains: list[Annotated[str, Field(min_length=1)]] = []
    # A long email: at least this many questions, or this many words of new text.
    max_questions: Annotated[int, Field(ge=1)] = 4
    max_words: Annotated[int, Field(ge=1)] = 400
    # The customer's n-th message in one thread (earlier ones unresolved) escalates.
    thread_messages: Annotated[int, Field(ge=2)] = 3
    # Share (0..1) of the mail the small model would answer alone that goes to the cloud LLM
    # all the same, chosen by a hash of its Message-ID (the same mail is always chosen or
    # not). The cloud's answer is the draft and a teacher label of ordinary mail: without
    # this sample the learning loop sees only the hard cases and the small model stays
    # under-confident on the rest. Costs this share of the kept mail at the cloud's price.
    quality_sample: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Accounts ("support") or mailboxes ("support/INBOX") whose mail never goes to the cloud.
    no_cloud: list[Annotated[str, Field(min_length=1)]] = []
    # Senders never answered (shell-style patterns on the address), besides our own addresses.
    skip_senders: list[Annotated[str, Field(min_length=1)]] = [
        "no-reply@*", "noreply@*", "do-not-reply@*", "donotreply@*",
    ]  # fmt: skip
    # When the cloud LLM also classifies (teacher labels): "always", "unsure" (only when the
    # small model's intent is the problem: low confidence, out of scope) or "never".
    llm_classify: Literal["always", "unsure", "never"] = "unsure"
    # Safety: link hosts and contacts (addresses, phone numbers) a reply may always mention.
    allowed_domains: list[Annotated[str, Field(min_length=1)]] = []
    allowed_contacts: list[Annotated[str, Field(min_length=1)]] = []
    # Largest amount a reply may promise (refund, credit), even one the customer named.
    max_promised_amount: Annotated[float, Field(ge=0)] = 500.0
    # A reply sharing a run of this many words with a prompt template is held back.
    prompt_overlap_words: Annotated[int, Field(ge=4, le=50)] = 8


class RetentionSettings(_Section):
    """How long personal data is kept (`mailbot retention`, `mailbot erase`)."""

    # Raw mail (the bytes as fetched) is deleted this many days after it was fetched, once
    # the pipeline is done with it; 0 keeps it.
    raw_days: Annotated[int, Field(ge=0, le=36500)] = 90
    # Everything else personal (subject, sender, drafts, extracted facts, cloud requests,
    # teacher labels' text) is removed after this many days; 0 keeps it. Rows, statuses,
    # costs and the audit events stay, so reports keep their figures.
    text_days: Annotated[int, Field(ge=0, le=36500)] = 730
    # How often the daemon applies it.
    interval_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 6.0

    @model_validator(mode="after")
    def _check(self) -> RetentionSettings:
        if self.text_days and self.raw_days and self.raw_days > self.text_days:
            raise ValueError(f"raw_days = {self.raw_days} is longer than text_days = "
                             f"{self.text_days}: raw mail holds the text too")
        return self


class WebSettings(_Section):
    """The review desk (`mailbot web`)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8025
    # The address agents open, e.g. https://desk.example.com; https makes cookies Secure.
    public_url: str = ""
    # A login lasts this long.
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    # The key that signs session cookies (at most one source). None: a random key kept in
    # <data_dir>/web-secret-key, created on first start.
    secret_key_env: str | None = None
    secret_key_file: str | None = None
    # A header set by a trusted reverse proxy naming the logged-in user (e.g. X-Remote-User),
    # accepted only from these proxy addresses.
    trusted_header: str = ""
    trusted_proxies: list[Annotated[str, Field(min_length=1)]] = []
    # How long an agent's claim on a message holds without a new edit.
    claim_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 15.0
    # Failed logins allowed per user name and per address in `login_window_seconds`.
    login_attempts: Annotated[int, Field(ge=1, le=1000)] = 5
    login_window_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    # Rows on one queue page.
    page_size: Annotated[int, Field(ge=10, le=1000)] = 100
    threads: Annotated[int, Field(ge=1, le=64)] = 8
    # Serve /metrics (Prometheus) and /healthz from the desk too, to the addresses in
    # metrics_allow only, and never to a request that came through a reverse proxy.
    metrics: bool = False
    metrics_allow: list[Annotated[str, Field(min_length=1)]] = ["127.0.0.1", "::1"]

    @model_validator(mode="after")
    def _check(self) -> WebSettings:
        if self.secret_key_env and self.secret_key_file:
            raise ValueError("set at most one of secret_key_env or secret_key_file")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"public_url {self.public_url!r} must start with https:// "
                             "(or http:// for a desk on loopback)")
        if self.trusted_header and not self.trusted_proxies:
            raise ValueError("trusted_header needs trusted_proxies: the addresses of the "
                             "proxies allowed to set it")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an IP address or "
                                 "network") from None
        for address in self.metrics_allow:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"metrics_allow: {address!r} is not an IP address or "
                                 "network") from None
        return self

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

class LearnSettings(_Section):
    """The learning loop (`mailbot learn`): retraining the heads from labelled mail."""

    # Let the worker run it on a schedule (`mailbot learn` runs it by hand either way).
    enabled: bool = True
    # Hours between scheduled runs.
    interval_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0
    # A head is retrained only when at least this many human or teacher labels arrived
    # since its last version was trained (`mailbot learn --force` ignores it).
    min_new_labels: Annotated[int, Field(ge=1)] = 50
    # A candidate is promoted unless its accuracy on the held-back mail is worse than the
    # promoted head's by more than this (0.01 = one percentage point) plus one standard
    # error of the paired difference (a slice of a few dozen messages is noisy).
    margin: Annotated[float, Field(ge=0, le=1)] = 0.01
    # Share of the most recent human- and teacher-labelled mail held back to compare the
    # candidate with the promoted head, within these bounds (messages).
    holdout_share: Annotated[float, Field(gt=0, lt=1)] = 0.2
    holdout_min: Annotated[int, Field(ge=1)] = 20
    holdout_max: Annotated[int, Field(ge=1)] = 1000
    # The intent confidence threshold is recalibrated so that the recent mail the small
    # model would keep is expected to be right this often (by its calibrated confidence,
    # over the last `calibration_messages` messages, labelled or not).
    target_accuracy: Annotated[float, Field(gt=0, le=1)] = 0.95
    # How sure that expectation must be (one-sided): the calibration was checked on a
    # limited number of trusted labels, so the mean confidence must exceed the target by
    # that check's standard error times this level's normal quantile (0.5 = no margin).
    confidence_level: Annotated[float, Field(ge=0.5, lt=1)] = 0.95
    calibration_messages: Annotated[int, Field(ge=10)] = 2000
    # Bounds of that threshold.
    min_confidence_floor: Annotated[float, Field(ge=0, le=1)] = 0.3
    min_confidence_ceiling: Annotated[float, Field(ge=0, le=1)] = 0.95
    # Use the recalibrated thresholds in routing ("apply"), or only record them ("record"),
    # leaving route.min_intent_confidence in force.
    thresholds: Literal["apply", "record"] = "apply"
    # Train on the packaged seed examples (mailbot/data/intents) as well.
    packaged_seed: bool = True
    # Labelled CSV files (`text,label` header) per head, e.g. {intent = ["intents.csv"]}.
    data: dict[Literal["intent", "priority", "sentiment"], list[str]] = {}
    # Teacher labels below this confidence (as the cloud model gave it) are left out.
    min_teacher_confidence: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Folds of cross-validation when learning; 0 = classifier.cv_folds.
    cv_folds: Annotated[int, Field(ge=0, le=20)] = 0
    # The lexical (character n-gram) half of a head helps most with few examples and costs
    # most of the training time with many; above this many examples it is left out.
    lexical_max_examples: Annotated[int, Field(ge=0)] = 5000

    @model_validator(mode="after")
    def _check(self) -> LearnSettings:
        if self.min_confidence_floor > self.min_confidence_ceiling:
            raise ValueError(f"min_confidence_floor = {self.min_confidence_floor} is above "
                             f"min_confidence_ceiling = {self.min_confidence_ceiling}")
        if self.holdout_min > self.holdout_max:
            raise ValueError(f"holdout_min = {self.holdout_min} is above holdout_max = "
                             f"{self.holdout_max}")
        if self.cv_folds == 1:
            raise ValueError("cv_folds = 1 cannot calibrate; use 0 (classifier.cv_folds) or >= 2")
        return self


class OutcomeSettings(_Section):
    """What became of the drafts, read from each account's Sent and Drafts folders for teams
    that answer from their mail client (`mailbot outcomes scan`)."""

    # Let the worker read the Sent and Drafts folders every scan_interval seconds.
    watch_mail_client: bool = True
    scan_interval: Annotated[float, Field(ge=10, le=86400)] = 300.0
    # A draft gone from the Drafts folder this long, with no reply in Sent, was discarded.
    discard_after_hours: Annotated[float, Field(ge=0, le=24 * 90)] = 24.0


class Config(_Section):
    """The whole validated configuration."""

    # Empty: $STATE_DIRECTORY (set by systemd's StateDirectory=), else the per-user data
    # directory (~/.local/share/mailbot); see `default_data_dir`.
    data_dir: str = ""
    database: DatabaseSettings = DatabaseSettings()
    models: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    drafts: DraftSettings = DraftSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    fields: FieldSettings = FieldSettings()
    llm: LLMSettings = LLMSettings()
    cost: CostSettings = CostSettings()
    kb: KnowledgeBaseSettings = KnowledgeBaseSettings()
    route: RouteSettings = RouteSettings()
    retention: RetentionSettings = RetentionSettings()
    web: WebSettings = WebSettings()
    learn: LearnSettings = LearnSettings()
    outcomes: OutcomeSettings = OutcomeSettings()
    accounts: list[AccountSettings] = []
    # Where the file was read from; relative paths in it are taken from its folder.
    source: str | None = None

    @model_validator(mode="after")
    def _unique_accounts(self) -> Config:
        names = [a.name for a in self.accounts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"account names must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    @property
    def data_path(self) -> Path:
        """The data directory (SQLite database, models), absolute."""
        if self.data_dir:
            return (self.base_dir / Path(self.data_dir).expanduser()).resolve()
        return default_data_dir()

    @property
    def models_path(self) -> Path:
        return (self.data_path / self.models.dir).resolve()

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL; SQLite in the data directory by default."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.data_path / 'mailbot.db'}"

    def reply_address(self, account_name: str | None) -> str:
        """The From address of a draft answering mail of this account."""
        for account in self.accounts:
            if account.name == account_name:
                if account.support_address:
                    return account.support_address
                if "@" in account.username:
                    return account.username
        return self.drafts.support_address or "support@localhost"

    def account(self, name: str) -> AccountSettings:
        for account in self.accounts:
            if account.name == name:
                return account
        raise ConfigError(f"no account named {name!r} in the configuration")


def default_data_dir() -> Path:
    """Where mailbot keeps its state when `data_dir` is not set.

    Under systemd with `StateDirectory=mailbot` that is $STATE_DIRECTORY (/var/lib/mailbot);
    otherwise the per-user data directory (~/.local/share/mailbot, or $XDG_DATA_HOME/mailbot).
    """
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state).resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("mailbot", appauthor=False)).resolve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_secret(key: str, value: SecretStr | None, env: str | None, file: str | None
                 ) -> str | None:
    """A secret from the config itself, the environment or a file (None: none set)."""
    if value is not None:
        return value.get_secret_value()
    if env is not None:
        found = os.environ.get(env)
        if found is None:
            raise ConfigError(f"{key}.password_env: environment variable {env!r} is not set; "
                              "export it or use password_file")
        return found
    if file is None:
        return None
    path = _expand_credentials(file)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{key}.password_file: cannot read {str(path)!r} ({exc.strerror}); "
                          "check the path and that the mailbot user may read it") from None


def _expand_credentials(value: str) -> Path:
    # systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY.
    if value.startswith("$CREDENTIALS_DIRECTORY") or "${CREDENTIALS_DIRECTORY}" in value:
        directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
        value = value.replace("${CREDENTIALS_DIRECTORY}", directory).replace(
            "$CREDENTIALS_DIRECTORY", directory
        )
    return Path(value).expanduser()


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Pick the config file: the explicit path, then $MAILBOT_CONFIG, then the defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in DEFAULT_CONFIG_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; `None` gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist; copy config.example.toml there "
            "or pass --config PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, source=str(path.resolve()))


def config_from_dict(data: dict[str, Any], source: str | None = None) -> Config:
    """Validate already-parsed settings (used by tests and by `load_config`)."""
    data = dict(data)
    data.pop("source", None)
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source)) from None


def _describe(exc: ValidationError, data: dict[str, Any], source: str | None) -> str:
    lines = []
    for err in exc.errors():
        key = _key_path(err["loc"], data)
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (a typo?); see config.example.toml for valid keys")
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("missing",):
            lines.append(f"{key}: required key is missing")
        elif "input" in err and not isinstance(err["input"], dict):
            expected = message.removeprefix("Input should be ").removeprefix("input should be ")
            shown = "(hidden)" if _is_secret(key) else repr(err["input"])
            lines.append(f"{key} = {shown}: expected {expected}")
        else:
            lines.append(f"{key}: {message}")
    where = f"{source}: " if source else ""
    if len(lines) == 1:
        return f"{where}invalid configuration: {lines[0]}"
    return f"{where}invalid configuration:\n  " + "\n  ".join(lines)


def _is_secret(key: str) -> bool:
    """Whether a key holds a secret whose value an error message must not repeat."""
    last = key.rsplit(".", 1)[-1].lower()
    return any(word in last for word in ("password", "secret", "token", "api_key", "apikey"))


def _key_path(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    # Show accounts by name ("accounts.support.port") rather than by index where possible.
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and item < len(node):
            entry = node[item]
            name = entry.get("name") if isinstance(entry, dict) else None
            parts[-1:] = [f"{parts[-1]}[{item}]" if not name else f"{parts[-1]}.{name}"]
            node = entry
            continue
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"
