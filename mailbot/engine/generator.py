"""Text generation and choice scoring with a CTranslate2 decoder-only or seq2seq model.

Drafting and field extraction call `generate`; classification into a fixed label set calls
`score_choices`, which ranks the given labels by log-probability, so the model can never
answer with a label that does not exist.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctranslate2
from tokenizers import Tokenizer

from mailbot.engine.manifest import ModelManifest, verify_model_dir
from mailbot.engine.runtime import load_ct2_model, resolve_compute_type, resolve_device
from mailbot.errors import ModelError

log = logging.getLogger(__name__)

# A shared prefix shorter than this is not worth a cached model state.
MIN_PREFIX_TOKENS = 8
# Distinct prefixes whose model state is kept for the life of the process. A prefix is a
# prompt template's fixed instructions, so a deployment has a few; past this limit a new one is
# still computed once per batch, just not kept.
MAX_CACHED_PREFIXES = 16


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated continuation and what it cost."""

    text: str
    prompt_tokens: int
    generated_tokens: int
    latency_s: float  # wall time of the whole call (a batch shares one figure)
    finished: bool  # True if it stopped at an end token, False if cut at max_new_tokens


class Generator:
    """A loaded generator: tokenizer + CTranslate2 `Generator` (decoder) or `Translator` (T5)."""

    def __init__(self, model_dir: Path, manifest: ModelManifest, model: Any) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self._model = model
        self._tokenizer = _load_tokenizer(model_dir / manifest.tokenizer)
        self._end_ids = _end_token_ids(model_dir, self._tokenizer)
        self._prefix_ids: dict[str, list[int]] = {}
        self._cached_prefixes: set[tuple[str, ...]] = set()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        intra_threads: int = 0,
        inter_threads: int = 1,
        hint: str = "",
    ) -> Generator:
        """Verify a generator directory and load it (shared per process)."""
        manifest = verify_model_dir(model_dir, kind=("generator", "seq2seq"), hint=hint)
        device = resolve_device(device)
        factory = ctranslate2.Translator if manifest.kind == "seq2seq" else ctranslate2.Generator
        model = load_ct2_model(
            factory,
            model_dir,
            device=device,
            compute_type=resolve_compute_type(device, compute_type),
            intra_threads=intra_threads,
            inter_threads=inter_threads,
        )
        return cls(model_dir, manifest, model)

    @property
    def name(self) -> str:
        """The model's directory name."""
        return self.model_dir.name

    @property
    def version(self) -> str:
        """A short hash of the weights."""
        return self.manifest.version

    @property
    def is_seq2seq(self) -> bool:
        return self.manifest.kind == "seq2seq"

    def count_tokens(self, text: str) -> int:
        """How many tokens the model sees for `text` as a prompt."""
        return len(self._tokenizer.encode(text).ids)

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 256,
        *,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
        top_k: int = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        max_batch_size: int = 0,
        prefix: str = "",
    ) -> list[Generation]:
        """Continue each prompt; greedy when `temperature` is 0, sampled otherwise.

        `prefix` is text the prompts begin with and that many later prompts share (a template's
        instructions): the model reads it once, keeps its state and starts each prompt from
        there. The output is the same as without it.
        """
        if not prompts:
            return []
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        started = time.perf_counter()
        encoded = [self._tokenizer.encode(p) for p in prompts]
        tokens = [enc.tokens for enc in encoded]
        sampling: dict[str, Any] = {
            "sampling_topk": 1 if temperature <= 0 else top_k,
            "sampling_topp": top_p,
            "sampling_temperature": max(temperature, 1e-6) if temperature > 0 else 1.0,
            "repetition_penalty": repetition_penalty,
            "max_batch_size": max_batch_size,
            "beam_size": 1,
        }
        if self._end_ids:
            sampling["end_token"] = self._end_ids
        static = self._static_prompt(prefix, encoded) if prefix and not self.is_seq2seq else []
        if static:
            tokens = [t[len(static):] for t in tokens]
            sampling["static_prompt"] = static
            sampling["cache_static_prompt"] = self._keep_prefix(static)
        if self.is_seq2seq:
            results = self._model.translate_batch(
                tokens,
                max_decoding_length=max_new_tokens,
                min_decoding_length=min_new_tokens,
                max_input_length=0,
                **sampling,
            )
        else:
            results = self._model.generate_batch(
                tokens,
                max_length=max_new_tokens,
                min_length=min_new_tokens,
                include_prompt_in_result=False,
                **sampling,
            )
        latency = time.perf_counter() - started
        generations = []
        for enc, result in zip(encoded, results, strict=True):
            ids = self._result_ids(result)
            generations.append(
                Generation(
                    text=self._tokenizer.decode(ids, skip_special_tokens=True),
                    prompt_tokens=len(enc.ids),
                    generated_tokens=len(ids),
                    latency_s=latency,
                    finished=len(ids) < max_new_tokens,
                )
            )
        log.debug("generated for %d prompts in %.1f ms", len(prompts), latency * 1000)
        return generations

    def _static_prompt(self, prefix: str, encoded: Sequence[Any]) -> list[str]:
        """The tokens every prompt starts with that come from `prefix`, or [] if too few.

        Splitting each prompt's own tokens keeps the model's input exactly as it was; the
        prefix tokenised alone can end differently from the same text inside a prompt, so only
        the tokens both agree on are shared.
        """
        prefix_ids = self._prefix_ids.get(prefix)
        if prefix_ids is None:
            prefix_ids = self._tokenizer.encode(prefix).ids
            if len(self._prefix_ids) < 4 * MAX_CACHED_PREFIXES:
                self._prefix_ids[prefix] = prefix_ids
        shared = len(prefix_ids)
        for enc in encoded:
            # Each prompt keeps at least its last token: decoding starts from it.
            shared = min(shared, len(enc.ids) - 1)
            for i in range(shared):
                if enc.ids[i] != prefix_ids[i]:
                    shared = i
                    break
        return list(encoded[0].tokens[:shared]) if shared >= MIN_PREFIX_TOKENS else []

    def _keep_prefix(self, static: list[str]) -> bool:
        """Whether the model state after `static` may be kept (a bounded number are)."""
        key = tuple(static)
        if key in self._cached_prefixes:
            return True
        if len(self._cached_prefixes) >= MAX_CACHED_PREFIXES:
            return False
        self._cached_prefixes.add(key)
        return True

    def score_choices(
        self, prompt: str, choices: Sequence[str], *, include_end: bool = False
    ) -> list[float]:
        """The total log-probability of each choice as the continuation of `prompt`.

        Choices are tokenised on their own and appended to the prompt's tokens, which is the
        sequence the model would produce when generating from that prompt; mind the leading
        space ("Answer:" + " refund"). With `include_end`, the end token's probability after
        the choice is added, so a label that is a prefix of another ("bill" / "billing") is
        not favoured.
        """
        if not choices:
            return []
        context = self._tokenizer.encode(prompt).ids
        if not context:
            raise ValueError("the prompt has no tokens to condition the choices on")
        continuations = []
        for choice in choices:
            ids = self._tokenizer.encode(choice, add_special_tokens=False).ids
            if not ids:
                raise ValueError(f"choice {choice!r} has no tokens")
            continuations.append(ids)
        to_tokens = self._ids_to_tokens
        if self.is_seq2seq:
            # The translator adds the decoder start token and appends the end token itself.
            results = self._model.score_batch(
                [to_tokens(context)] * len(choices),
                [to_tokens(ids) for ids in continuations],
                max_input_length=0,
            )
            return [
                float(sum(r.log_probs if include_end else r.log_probs[: len(ids)]))
                for r, ids in zip(results, continuations, strict=True)
            ]
        end = [self._end_ids[0]] if include_end and self._end_ids else []
        sequences = [to_tokens(context + ids + end) for ids in continuations]
        results = self._model.score_batch(sequences, max_input_length=0)
        # log_probs[i] scores token i + 1 given the tokens before it; keep the choice's part.
        return [
            float(sum(r.log_probs[-(len(ids) + len(end)) :]))
            for r, ids in zip(results, continuations, strict=True)
        ]

    def _result_ids(self, result: Any) -> list[int]:
        if not self.is_seq2seq:
            return list(result.sequences_ids[0])
        # TranslationResult carries tokens only; map them back through the tokenizer.
        ids = [self._tokenizer.token_to_id(token) for token in result.hypotheses[0]]
        return [i for i in ids if i is not None]

    def _ids_to_tokens(self, ids: list[int]) -> list[str]:
        tokens = []
        for token_id in ids:
            token = self._tokenizer.id_to_token(token_id)
            if token is None:
                raise ModelError(f"{self.model_dir}: token id {token_id} is not in the vocabulary")
            tokens.append(token)
        return tokens


def _load_tokenizer(path: Path) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"{path}: cannot load the tokenizer ({exc})") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _end_token_ids(model_dir: Path, tokenizer: Tokenizer) -> list[int]:
    """The tokens that end a generation: generation_config.json's list, else the model's EOS.

    Chat models often stop on several tokens (Qwen: <|im_end|> and <|endoftext|>), which only
    generation_config.json lists; CTranslate2's config knows just one.
    """
    ids: list[int] = []
    generation_config = model_dir / "generation_config.json"
    if generation_config.is_file():
        try:
            value = json.loads(generation_config.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, json.JSONDecodeError):
            value = None
        if isinstance(value, int):
            ids = [value]
        elif isinstance(value, list):
            ids = [v for v in value if isinstance(v, int)]
    if not ids:
        try:
            ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            ct2_config = {}
        eos = ct2_config.get("eos_token")
        eos_id = tokenizer.token_to_id(eos) if isinstance(eos, str) else None
        if eos_id is not None:
            ids = [eos_id]
    return ids
