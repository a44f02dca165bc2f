"""The models a mailbot process uses, loaded once from the configured models directory."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mailbot.config import ModelSettings
from mailbot.engine.manifest import creation_hint

if TYPE_CHECKING:
    from mailbot.engine.encoder import Encoder
    from mailbot.engine.generator import Generator


class ModelRegistry:
    """Hands out the configured encoder and generator, loading each on first use.

    The CTranslate2 models behind them are cached per process (see `runtime.load_ct2_model`),
    so several registries over the same settings share one copy of the weights.
    """

    def __init__(self, settings: ModelSettings, models_path: Path) -> None:
        self.settings = settings
        self.models_path = Path(models_path)
        self._lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._generator: Generator | None = None

    def _prepare_process(self) -> None:
        """Process-wide settings CTranslate2 reads when it loads its first model."""
        from mailbot.engine.runtime import choose_cpu_isa, reuse_freed_memory

        reuse_freed_memory(self.settings.reuse_freed_memory_mb)
        choose_cpu_isa(self.settings.cpu_isa)

    @property
    def encoder_dir(self) -> Path:
        """Where the configured encoder lives."""
        return self.models_path / self.settings.encoder

    @property
    def generator_dir(self) -> Path | None:
        """Where the configured generator lives; None when none is configured."""
        return self.models_path / self.settings.generator if self.settings.generator else None

    def encoder(self) -> Encoder:
        """The sentence encoder; raises `ModelError` if its directory is missing or corrupt."""
        from mailbot.engine.encoder import Encoder

        with self._lock:
            if self._encoder is None:
                s = self.settings
                self._prepare_process()
                self._encoder = Encoder.load(
                    self.encoder_dir,
                    device=s.device,
                    compute_type=s.compute_type,
                    intra_threads=s.intra_threads,
                    inter_threads=s.inter_threads,
                    max_input_tokens=s.max_input_tokens,
                    batch_size=s.batch_size,
                    hint=creation_hint(self.encoder_dir, default_encoder=False, encoder=s.encoder),
                )
            return self._encoder

    def generator(self) -> Generator | None:
        """The generator, or None when `models.generator` is empty."""
        directory = self.generator_dir
        if directory is None:
            return None
        from mailbot.engine.generator import Generator

        with self._lock:
            if self._generator is None:
                s = self.settings
                self._prepare_process()
                self._generator = Generator.load(
                    directory,
                    device=s.device,
                    compute_type=s.compute_type,
                    intra_threads=s.intra_threads,
                    inter_threads=s.inter_threads,
                    hint=creation_hint(directory, default_encoder=False),
                )
            return self._generator
