"""The small-model runtime: CTranslate2 encoders and generators, their manifests and conversion.

Only `ctranslate2`, `tokenizers` and `numpy` are needed at run time; conversion
(`mailbot.engine.convert`) needs the `convert` extra and is imported on demand.
"""

from __future__ import annotations

from mailbot.engine.encoder import Embeddings, Encoder
from mailbot.engine.generator import Generation, Generator
from mailbot.engine.manifest import MANIFEST_NAME, ModelManifest, read_manifest, verify_model_dir
from mailbot.engine.registry import ModelRegistry

__all__ = [
    "MANIFEST_NAME",
    "Embeddings",
    "Encoder",
    "Generation",
    "Generator",
    "ModelManifest",
    "ModelRegistry",
    "read_manifest",
    "verify_model_dir",
]
