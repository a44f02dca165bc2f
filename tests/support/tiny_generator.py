"""Tiny generators built on the spot: a tokenizer trained here and a few seconds of training.

No hub access: the tokenizer is trained with `tokenizers` on support-style sentences made from
templates below, the models are a 2-layer Qwen2 (decoder-only) and a 2-layer T5
(encoder-decoder) taught to answer "Intent:" with a label, then saved with transformers.
Tests convert them with the real converter and run them through the real code path.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Bump when the data, tokenizer or architecture below change, so cached builds are redone.
BUILD_VERSION = "1"
STAMP = "tiny-build-version"

INTENT_PHRASES: dict[str, tuple[str, ...]] = {
    "refund": (
        "I want my money back for order {order}",
        "please refund the {thing} I returned last week",
        "I was charged twice, refund the extra payment",
        "the {thing} was broken so I need a refund",
        "when will I get the refund for order {order}",
    ),
    "shipping": (
        "my parcel for order {order} has not arrived yet",
        "where is my package, the tracking has not moved",
        "the delivery of the {thing} is late again",
        "can you tell me when order {order} will be shipped",
        "the courier lost my parcel with the {thing}",
    ),
    "password": (
        "I forgot my password and cannot log in",
        "the password reset link has expired",
        "I cannot sign in to my account since {day}",
        "please help me reset my password",
        "my login stopped working on {day}",
    ),
    "cancel": (
        "please cancel my subscription today",
        "I want to cancel order {order} before it ships",
        "cancel my account and stop the monthly plan",
        "how do I cancel the {thing} subscription",
        "stop my plan, I do not want to renew it",
    ),
    "invoice": (
        "please send me an invoice for order {order}",
        "the invoice shows the wrong address",
        "I need a copy of the invoice for my {thing}",
        "the VAT number on the invoice is wrong",
        "can you resend the invoice from {day}",
    ),
}
_THINGS = ("headphones", "jacket", "coffee maker", "phone case", "lamp", "backpack", "shoes")
_DAYS = ("Monday", "Tuesday", "Friday", "yesterday", "last week")
_OPENERS = ("Hello,", "Hi,", "Dear support,", "Good morning,", "")
_CLOSERS = ("Thanks.", "Regards, Anna", "Best, Tom", "Thank you!", "")

EOS = "<|endoftext|>"
T5_SPECIALS = ("<pad>", "</s>", "<unk>")


def support_examples(count: int = 400, seed: int = 7) -> list[tuple[str, str]]:
    """(email text, intent) pairs made from the templates above."""
    rng = random.Random(seed)
    examples = []
    intents = sorted(INTENT_PHRASES)
    for i in range(count):
        intent = intents[i % len(intents)]
        body = rng.choice(INTENT_PHRASES[intent]).format(
            order=rng.randint(10000, 99999), thing=rng.choice(_THINGS), day=rng.choice(_DAYS)
        )
        text = " ".join(p for p in (rng.choice(_OPENERS), body + ".", rng.choice(_CLOSERS)) if p)
        examples.append((text, intent))
    return examples


def decoder_line(text: str, intent: str | None = None) -> str:
    """The prompt format the tiny decoder is trained on (without intent: the prompt)."""
    prompt = f"Email: {text} Intent:"
    return prompt if intent is None else f"{prompt} {intent}"


def build_tiny_decoder(dest: Path, *, steps: int = 120) -> Path:
    """Build (or reuse) a trained 2-layer Qwen2 causal LM with its tokenizer at `dest`."""
    if _is_current(dest):
        return dest
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    examples = support_examples()
    lines = [decoder_line(t, i) for t, i in examples]
    tokenizer = _train_tokenizer(lines, specials=(EOS,), vocab_size=600, append_eos=False)
    torch.manual_seed(0)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    model = Qwen2ForCausalLM(config)
    texts = [line + EOS for line in lines]
    _train(model, tokenizer, texts, None, steps=steps)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    return _save(model, tokenizer, dest)


def build_tiny_t5(dest: Path, *, steps: int = 120) -> Path:
    """Build (or reuse) a trained 2-layer T5 that maps "Email: ..." to the intent."""
    if _is_current(dest):
        return dest
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    examples = support_examples()
    sources = [f"Email: {t}" for t, _ in examples]
    targets = [i for _, i in examples]
    tokenizer = _train_tokenizer(
        sources + targets, specials=T5_SPECIALS, vocab_size=600, append_eos=True
    )
    torch.manual_seed(0)
    pad_id = tokenizer.convert_tokens_to_ids("<pad>")
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("</s>"),
        decoder_start_token_id=pad_id,
    )
    model = T5ForConditionalGeneration(config)
    _train(model, tokenizer, sources, targets, steps=steps)
    return _save(model, tokenizer, dest)


def convert_cached(hf_dir: Path, dest: Path, quantization: str) -> Path:
    """Convert with mailbot's converter unless `dest` already holds this exact build."""
    from mailbot.engine.convert import convert_model
    from mailbot.engine.manifest import verify_model_dir
    from mailbot.errors import ModelError

    stamp = f"{BUILD_VERSION}:{quantization}"
    try:
        manifest = verify_model_dir(dest)
        if (
            manifest.source == str(hf_dir)
            and (dest / STAMP).read_text(encoding="utf-8") == stamp
            and (dest / STAMP).stat().st_mtime >= (hf_dir / STAMP).stat().st_mtime
        ):
            return dest
    except (ModelError, OSError):
        pass
    convert_model(str(hf_dir), dest, quantization=quantization, force=True)
    (dest / STAMP).write_text(stamp, encoding="utf-8")
    return dest


def _is_current(dest: Path) -> bool:
    try:
        return (dest / STAMP).read_text(encoding="utf-8") == BUILD_VERSION
    except OSError:
        return False


def _train_tokenizer(
    lines: list[str], *, specials: tuple[str, ...], vocab_size: int, append_eos: bool
) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if append_eos:
        # T5 style: no byte-level, "</s>" appended to every input, "<unk>" for the unknown.
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials))
        tok.train_from_iterator(lines, trainer)
        eos_id = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
        )
    # Qwen style: byte-level BPE, nothing added around the prompt.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=EOS
    )


def _train(
    model: Any, tokenizer: Any, sources: list[str], targets: list[str] | None, *, steps: int
) -> None:
    """A few seconds of AdamW so the model's answers follow the data, not noise."""
    import torch

    # One thread: the matrices are too small to share out, and on a busy machine spinning
    # worker threads made training tens of times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_steps(model, tokenizer, sources, targets, steps=steps)
    finally:
        torch.set_num_threads(threads)


def _train_steps(
    model: Any, tokenizer: Any, sources: list[str], targets: list[str] | None, *, steps: int
) -> None:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    order = list(range(len(sources)))
    model.train()
    for _ in range(steps):
        batch = rng.sample(order, 32)
        enc = tokenizer([sources[i] for i in batch], return_tensors="pt", padding=True)
        if targets is None:
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            loss = model(**enc, labels=labels).loss
        else:
            target = tokenizer([targets[i] for i in batch], return_tensors="pt", padding=True)
            labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
            loss = model(**enc, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _save(model: Any, tokenizer: Any, dest: Path) -> Path:
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / STAMP).write_text(BUILD_VERSION, encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest
