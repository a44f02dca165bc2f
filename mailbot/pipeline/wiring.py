"""Wiring: the stages, the runner and the cloud LLM step, built from the configuration.

The path of a message: parse -> classify -> extract -> retrieve -> (generate) -> route ->
draft, then, for escalated mail, the cloud LLM step and the draft again. Models load here,
once, and are shared by the classifier and the knowledge base.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailbot.classify.stage import ClassifyStage
from mailbot.compose.stage import ComposeStage
from mailbot.fields.stage import ExtractStage
from mailbot.parse.stage import ParseStage
from mailbot.pipeline.record import Recorder
from mailbot.pipeline.runner import Pipeline, PipelineSettings
from mailbot.route.stage import RouteStage

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.db.session import Database
    from mailbot.llm.escalate import EscalationRunner


def build_stages(config: Config, database: Any = None, *, until: str | None = None
                 ) -> list[Any]:
    """The stages in order, as the configuration asks for them (models load here, once).

    With a database the knowledge base is searched; `until` stops after the named stage
    (`mailbot route` stops after "route": no draft).
    """
    stages: list[Any] = [ParseStage()]
    if not config.classifier.enabled:
        return stages
    from mailbot.classify import Classifier
    from mailbot.fields import build_schema

    classifier = Classifier.from_config(config, database)
    stages.append(ClassifyStage(classifier, config.cost.cpu_hour))
    generator = _generator(config)
    extractor = None
    if config.fields.use_generator:
        from mailbot.fields.generator import build_generator_extractor

        extractor = build_generator_extractor(config, generator)
    stages.append(ExtractStage(build_schema(config.fields), extractor))
    if database is not None:
        from mailbot.kb.knowledge import KnowledgeBase
        from mailbot.kb.stage import RetrieveStage

        # The registry shares the loaded encoder with the classifier.
        knowledge_base = KnowledgeBase.from_config(config, database)
        stages.append(RetrieveStage(knowledge_base, config.kb.top_k))
    if config.drafts.enabled and config.drafts.use_generator:
        from mailbot.compose.generator import build_generate_stage

        # Before the router, so that a body failing its gates can be escalated (the
        # generation_failed reason); the draft stage falls back to the template otherwise.
        stages.append(build_generate_stage(config, generator))
    if config.route.enabled:
        stages.append(RouteStage(config, llm_available=config.llm.enabled))
    if until is not None:
        names = [s.name for s in stages]
        return stages[: names.index(until) + 1] if until in names else stages
    if config.drafts.enabled:
        stages.append(ComposeStage(config))
    return stages


def _generator(config: Config) -> Any:
    """The configured generator when drafting or extraction uses it (loaded once), else None."""
    if not (config.fields.use_generator or (config.drafts.enabled and config.drafts.use_generator)):
        return None
    from mailbot.engine import ModelRegistry

    return ModelRegistry(config.models, config.models_path).generator()


def intent_labels(config: Config, stages: list[Any]) -> list[str]:
    """The labels the cloud LLM may choose from: the configured ones, else the intent head's."""
    if config.classifier.intents:
        return list(config.classifier.intents)
    for stage in stages:
        if isinstance(stage, ClassifyStage):
            return list(stage.classifier.heads["intent"].labels)
    return []


@dataclass
class WorkerPipeline:
    """The runner and, when a cloud LLM is configured, the cloud step beside it."""

    pipeline: Pipeline
    escalations: EscalationRunner | None


def build_pipeline(
    config: Config,
    database: Database,
    *,
    owner: str | None = None,
    stop: threading.Event | None = None,
    stages: list[Any] | None = None,
    llm_client: Any = None,
) -> WorkerPipeline:
    """The pipeline the worker runs: stages, recorder, runner and the cloud LLM step."""
    from mailbot.ingest.lease import worker_identity

    owner = owner or worker_identity()
    stop = stop or threading.Event()
    stages = stages if stages is not None else build_stages(config, database)
    escalations = None
    planner = None
    if config.llm.enabled and config.route.enabled and config.classifier.enabled:
        from mailbot.llm.escalate import plan_request

        def planner(case: Any) -> Any:
            return plan_request(case, config, intent_labels(config, stages))

    pipeline = Pipeline(database, stages, recorder=Recorder(config, planner),
                        settings=PipelineSettings.from_config(config), owner=owner)
    if planner is not None:
        from mailbot.llm.client import LLMClient
        from mailbot.llm.escalate import EscalationRunner

        client = llm_client or LLMClient.from_config(config, sleep=_interruptible(stop))
        assert client is not None  # llm.enabled
        escalations = EscalationRunner(database, config, client, pipeline, owner=owner,
                                       stop=stop)
    return WorkerPipeline(pipeline, escalations)


def _interruptible(stop: threading.Event) -> Any:
    """A sleep for the waits between retries that SIGTERM cuts short."""
    from mailbot.errors import Stopping

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopping("stopping: the wait before the next attempt was cut short")

    return sleep
