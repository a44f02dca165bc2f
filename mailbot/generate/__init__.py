"""The generator's own work: reply bodies behind quality gates, and fields as checked JSON.

`GenerateStage` (drafts.use_generator) writes a reply body grounded in the knowledge-base
passages and gates it; the draft stage uses it or falls back to the template.
`GeneratorExtractor` (fields.use_generator) adds validated values to the rule extractor's.
"""

from mailbot.generate.draft import (
    GeneratedReply,
    GenerateStage,
    ReplyGenerator,
    ReplyRequest,
    build_generate_stage,
    draft_gates,
)
from mailbot.generate.extract import (
    GeneratorExtractor,
    GeneratorReport,
    build_generator_extractor,
    parse_answer,
)
from mailbot.generate.gates import GateReport, GateResult, GateSettings, check_body
from mailbot.generate.prompt import ChatFormat, SlmPrompts, TextGenerator
from mailbot.generate.validate import CheckedValue, ValueProblem, check_value, locate

__all__ = [
    "ChatFormat",
    "CheckedValue",
    "GateReport",
    "GateResult",
    "GateSettings",
    "GenerateStage",
    "GeneratedReply",
    "GeneratorExtractor",
    "GeneratorReport",
    "ReplyGenerator",
    "ReplyRequest",
    "SlmPrompts",
    "TextGenerator",
    "ValueProblem",
    "build_generate_stage",
    "build_generator_extractor",
    "check_body",
    "check_value",
    "draft_gates",
    "locate",
    "parse_answer",
]
