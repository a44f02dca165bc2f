"""Building the packaged seed heads in a child process, so that the worker never trains.

Training imports scikit-learn and holds the training matrices: about 100 MB more at the
peak than classifying. `mailbot model prepare` builds the seed heads ahead of time; when it
was not run, the worker builds them here, in a process of its own that exits afterwards,
and its own peak memory stays that of a later start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from mailbot.config import ModelSettings
from mailbot.errors import ModelError

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 900


def build_seed_heads_in_child(settings: ModelSettings, models_path: Path) -> None:
    """Build the missing seed heads for `settings.encoder` in a child Python process."""
    log.warning(
        "the seed heads for %s are not built yet; building them in a child process "
        "(`mailbot model prepare` builds them ahead of time)",
        settings.encoder,
    )
    command = [
        sys.executable,
        "-m",
        "mailbot.classify.seeds",
        str(models_path),
        settings.model_dump_json(),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"building the seed heads took over {CHILD_TIMEOUT_S} s; run `mailbot model prepare`"
        ) from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(
            f"building the seed heads in a child process failed ({detail}); "
            "run `mailbot model prepare` to see why"
        )


def _main(argv: list[str]) -> int:
    from mailbot.classify.store import HeadStore
    from mailbot.engine import ModelRegistry

    models_path = Path(argv[0])
    settings = ModelSettings.model_validate_json(argv[1])
    encoder = ModelRegistry(settings, models_path).encoder()
    HeadStore(models_path, None).prepare_seed_heads(encoder)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except Exception as exc:  # the parent shows the last line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
