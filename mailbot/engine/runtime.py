"""Where and how CTranslate2 runs: device choice, compute type fallback, output conversion."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np

from mailbot.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

# What to try, in order, when the configured compute type is not supported on the device.
_FALLBACKS = {
    "cpu": ("int8", "int8_float32", "float32"),
    "cuda": ("int8_float16", "int8", "float16", "float32"),
}


def resolve_device(device: str) -> str:
    """Turn the configured device (`cpu`, `cuda`, `auto`) into the one CTranslate2 will use."""
    if device == "cpu":
        return "cpu"
    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if device == "cuda":
        if gpus == 0:
            raise ConfigError(
                "models.device = 'cuda' but CTranslate2 finds no CUDA device; "
                "set models.device to 'cpu' or 'auto'"
            )
        return "cuda"
    raise ConfigError(f"models.device = {device!r}: expected 'cpu', 'cuda' or 'auto'")


def resolve_compute_type(device: str, compute_type: str) -> str:
    """The configured compute type, or the closest one the device supports (with a warning)."""
    if compute_type in ("default", "auto"):
        return compute_type
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type in supported:
        return compute_type
    for candidate in _FALLBACKS.get(device, ("float32",)):
        if candidate in supported:
            log.warning(
                "compute type %s is not supported on %s (supported: %s); using %s",
                compute_type,
                device,
                ", ".join(sorted(supported)),
                candidate,
            )
            return candidate
    return "default"


# CPU flags (Linux names) that give int8 matrix products a dot-product instruction; without
# one, int8 inference runs several times slower (measured: about 4x for the encoder).
_INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")


def _cpu_fields(cpuinfo: Path) -> dict[str, str] | None:
    """The first processor's fields in /proc/cpuinfo, or None where it cannot be read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_flags(fields: dict[str, str]) -> set[str]:
    return set((fields.get("flags") or fields.get("Features") or "").split())


def cpu_summary(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model and its int8 dot-product instructions, for logs and bench reports."""
    fields = _cpu_fields(cpuinfo)
    if fields is None:
        return "CPU unknown"
    flags = _cpu_flags(fields)
    model = fields.get("model name") or fields.get("Model") or "CPU"
    family = f" (family {fields['cpu family']} model {fields['model']})" if (
        "cpu family" in fields and "model" in fields) else ""
    dot = [f for f in _INT8_DOT_FLAGS if f in flags]
    isa = ", ".join(dot) if dot else "none: int8 runs on " + (
        "AVX2" if "avx2" in flags else "plain SIMD")
    return f"{model}{family}; int8 dot-product instructions: {isa}"


# What CTranslate2 requires of the CPU for each instruction set it can be told to use
# (CT2_FORCE_CPU_ISA); /proc/cpuinfo's names.
_ISA_FLAGS = {
    "AVX512": {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"},
    "AVX2": {"avx2"},
    "AVX": {"avx"},
    "NEON": {"asimd"},
    "GENERIC": set(),
}
_CPU_ISA_ENV = "CT2_FORCE_CPU_ISA"
_CPU_ISA_SET = False


def choose_cpu_isa(setting: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Tell CTranslate2 which instruction set its own CPU kernels use (`models.cpu_isa`).

    Those kernels (quantizing activations, softmax, GELU, layer norms) took about 40% of the
    encoder's time on a CPU with AMX. CTranslate2 leaves AVX-512 out of its automatic choice,
    a caution from CPUs that slowed their clocks for it; on CPUs with AVX-512 VNNI (Intel
    Cascade Lake and later, AMD Zen 4 and later) it measured faster: the encoder by about 20%,
    generation by 5-8%. So "auto" picks AVX-512 there and leaves the choice to CTranslate2
    elsewhere; "ctranslate2" always leaves it; "avx512", "avx2", "avx", "neon" and "generic"
    force one. CTranslate2 reads the choice once, at its first model load, so the first call
    in a process wins, and a CT2_FORCE_CPU_ISA already in the environment is left alone.
    Returns the instruction set forced, or None for CTranslate2's own choice. Raises
    `ConfigError` for one this CPU lacks.
    """
    global _CPU_ISA_SET
    if _CPU_ISA_SET or os.environ.get(_CPU_ISA_ENV):
        return os.environ.get(_CPU_ISA_ENV) or None
    wanted = setting.upper()
    if wanted == "CTRANSLATE2":
        _CPU_ISA_SET = True
        return None
    fields = _cpu_fields(cpuinfo)
    flags = _cpu_flags(fields) if fields else set()
    if wanted == "AUTO":
        wanted = "AVX512" if _ISA_FLAGS["AVX512"] | {"avx512_vnni"} <= flags else ""
    elif wanted not in _ISA_FLAGS:
        raise ConfigError(f"models.cpu_isa = {setting!r}: expected 'auto', 'ctranslate2', "
                          "'avx512', 'avx2', 'avx', 'neon' or 'generic'")
    elif fields is not None and not _ISA_FLAGS[wanted] <= flags:
        raise ConfigError(f"models.cpu_isa = {setting!r}, but this CPU lacks "
                          f"{', '.join(sorted(_ISA_FLAGS[wanted] - flags))}; set it to 'auto'")
    _CPU_ISA_SET = True
    if not wanted:
        return None
    os.environ[_CPU_ISA_ENV] = wanted
    log.debug("CTranslate2's CPU kernels will use %s", wanted)
    return wanted


def to_float32(view: Any) -> np.ndarray:
    """A CTranslate2 StorageView (on any device, any float type) as a float32 NumPy array."""
    if view.device != "cpu":
        view = view.to_device(ctranslate2.Device.cpu)
    if view.dtype in (ctranslate2.DataType.float16, ctranslate2.DataType.bfloat16):
        view = view.to(ctranslate2.DataType.float32)
    return np.asarray(view, dtype=np.float32)


# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_ALLOCATOR_LIMIT_MB: int | None = None


def reuse_freed_memory(limit_mb: int) -> bool:
    """Let the C allocator keep freed blocks of up to `limit_mb` for reuse (glibc only).

    Inference allocates and frees its activations layer by layer. glibc hands every block over
    32 MB straight back to the kernel, so a batch of prompts faults all of that memory in again
    at each layer: measured, this cost about 40% of an 8-prompt generation. Kept blocks make the
    process's RSS stay at its peak instead of shrinking between batches.

    CTranslate2 runs a model in threads of its own, and glibc gives threads other than the main
    one arenas of 64 MB heaps that go back to the kernel as soon as they empty, whatever the
    thresholds: a generator's key/value cache, reallocated one token longer at every step, was
    faulted in afresh on every call (about 10% of a batch's time). So all threads share the
    main heap; small blocks still come from per-thread caches without a lock. This must happen
    before the inference threads first allocate, which is why the registry calls it before
    loading a model.

    0 keeps glibc's defaults. Returns whether the setting is in effect; the first call in a
    process wins.
    """
    global _ALLOCATOR_LIMIT_MB
    if limit_mb <= 0:
        return False
    if _ALLOCATOR_LIMIT_MB is not None:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt(): freed memory goes back to the system as usual")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    limit = min(limit_mb, 1024) * 1024 * 1024  # mallopt takes an int: 2 GB at most
    # The trim threshold must exceed the mmap threshold, or the top of the heap is given
    # back as soon as a large block there is freed.
    if not (mallopt(_M_MMAP_THRESHOLD, limit) and mallopt(_M_TRIM_THRESHOLD, 2 * limit - 1)
            and mallopt(_M_ARENA_MAX, 1)):
        log.warning("the C library refused mallopt(%d MB); using its defaults", limit_mb)
        return False
    _ALLOCATOR_LIMIT_MB = limit_mb
    log.debug("the allocator keeps freed blocks of up to %d MB for reuse", limit_mb)
    return True


# Loaded CTranslate2 models, shared by everything in the process: loading one costs a second
# and its weights in memory, and the models are safe to call from several threads.
_MODELS: dict[tuple[Any, ...], Any] = {}
_MODELS_LOCK = threading.Lock()
_CPU_LOGGED = False


def load_ct2_model(
    factory: Callable[..., Any],
    model_dir: Path,
    *,
    device: str,
    compute_type: str,
    intra_threads: int,
    inter_threads: int,
) -> Any:
    """Load (or reuse) a CTranslate2 `Encoder`, `Generator` or `Translator` for a directory.

    The key includes the weights' size and mtime so that a model converted again in place
    (`--force`) is reloaded rather than served stale.
    """
    weights = (model_dir / "model.bin").stat()
    key = (
        factory.__name__,
        str(model_dir.resolve()),
        weights.st_size,
        weights.st_mtime_ns,
        device,
        compute_type,
        intra_threads,
        inter_threads,
    )
    global _CPU_LOGGED
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None and device == "cpu" and not _CPU_LOGGED:
            _CPU_LOGGED = True
            log.info("%s", cpu_summary())
        if model is None:
            log.info(
                "loading %s from %s (%s, %s, %d intra / %d inter threads)",
                factory.__name__,
                model_dir,
                device,
                compute_type,
                intra_threads,
                inter_threads,
            )
            try:
                model = factory(
                    str(model_dir),
                    device=device,
                    compute_type=compute_type,
                    intra_threads=intra_threads,
                    inter_threads=inter_threads,
                )
            except (RuntimeError, ValueError) as exc:
                # e.g. a model converted by a newer CTranslate2, or a damaged config.json
                raise ModelError(
                    f"{model_dir}: CTranslate2 cannot load this model ({exc})"
                ) from None
            _MODELS[key] = model
        return model


def clear_model_cache() -> None:
    """Drop every cached model (tests; a long-lived process after models were replaced)."""
    with _MODELS_LOCK:
        _MODELS.clear()
