"""A fresh worker process with the encoder loaded stays small and never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

RSS_LIMIT_MB = 300

_WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import mailbot.cli  # the worker starts through the CLI: every command module is imported
    from mailbot.config import ModelSettings
    from mailbot.engine import ModelRegistry

    registry = ModelRegistry(ModelSettings(encoder=sys.argv[2]), Path(sys.argv[1]))
    encoder = registry.encoder()
    body = (
        "Hello, I ordered a coffee maker three weeks ago (order 48213) and it still has not "
        "arrived. The tracking page has said 'label created' since the first day and nobody "
        "answers the phone. I paid for express delivery. Could you tell me where it is, or "
        "refund the shipping cost and send a new one? I need it before my parents visit. "
    )
    texts = [f"Message {i}: " + body * (1 + i % 4) for i in range(96)]
    embeddings = encoder.embed(texts)
    status = dict(
        line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Vm")
    )
    print(json.dumps({
        "rows": embeddings.vectors.shape[0],
        "truncated": sum(embeddings.truncated),
        "vm_hwm_kb": int(status["VmHWM"].split()[0]),
        "heavy": sorted(m for m in ("torch", "transformers", "sentence_transformers")
                        if m in sys.modules),
    }))
    """
)


def test_worker_with_encoder_stays_small_and_never_imports_torch(encoder_dir: Path) -> None:
    _check_worker(encoder_dir)


def test_worker_with_the_multilingual_encoder_stays_small(e5_encoder_dir: Path) -> None:
    # 250k-token vocabulary: int8 embeddings (96 MB), sentencepiece rather than tokenizers
    # (55 MB rather than 260), and no 250k-entry vocabulary.json inside CTranslate2.
    _check_worker(e5_encoder_dir)


def _check_worker(model_dir: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", _WORKER, str(model_dir.parent), model_dir.name],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["rows"] == 96
    assert report["truncated"] > 0  # the long ones really ran at the 256-token limit
    assert report["heavy"] == []
    # VmHWM belongs to the process's own address space. ru_maxrss is not usable here: Linux
    # carries it over from the forking parent (this pytest process, torch and all) across exec.
    peak_mb = report["vm_hwm_kb"] / 1024
    assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"


# The real CLI in this process, then its own peak memory and whether it ever trained.
_CLASSIFY = textwrap.dedent(
    """
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from mailbot.cli import cli
    from mailbot.cli.common import run_cli
    code = run_cli(cli, sys.argv[1:])
    status = dict(
        line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Vm")
    )
    print(json.dumps({"code": code, "vm_hwm_kb": int(status["VmHWM"].split()[0]),
                      "sklearn": "sklearn" in sys.modules}))
    """
)


def _fresh_data_dir(tmp_path: Path, encoder_dir: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / encoder_dir.name).symlink_to(encoder_dir, target_is_directory=True)
    config = tmp_path / "mailbot.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n[models]\ndir = "{models}"\n', "utf-8")
    return config


def _mailbot(config: Path, *args: str) -> tuple[dict[str, object], str]:
    completed = subprocess.run(
        [sys.executable, "-c", _CLASSIFY, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["code"] == 0, completed.stderr
    report["output"] = "\n".join(lines[:-1])
    return report, completed.stderr


def test_after_model_prepare_the_first_classify_never_trains(
    tmp_path: Path, encoder_dir: Path
) -> None:
    config = _fresh_data_dir(tmp_path, encoder_dir)
    prepared, _ = _mailbot(config, "model", "prepare")
    assert "trained the seed heads (intent, priority, sentiment)" in str(prepared["output"])
    seeds = sorted((tmp_path / "models" / "heads").glob("*/seed-*/head.json"))
    assert len(seeds) == 3
    written = [p.stat().st_mtime_ns for p in seeds]

    first, log = _mailbot(config, "classify", "Where is my parcel? I ordered it two weeks ago.")
    assert json.loads(str(first["output"]))["intent"]["label"] == "order_status"
    assert "seed head" not in log and "child process" not in log
    assert first["sklearn"] is False  # nothing was trained in this process
    assert [p.stat().st_mtime_ns for p in seeds] == written
    assert int(first["vm_hwm_kb"]) / 1024 < RSS_LIMIT_MB  # type: ignore[call-overload]

    again, _ = _mailbot(config, "model", "prepare")
    assert "seed heads are already built" in str(again["output"])


def test_without_prepare_the_seed_heads_are_built_outside_the_worker(
    tmp_path: Path, encoder_dir: Path
) -> None:
    config = _fresh_data_dir(tmp_path, encoder_dir)
    first, log = _mailbot(config, "classify", "I was charged twice for one order.")
    assert "mailbot model prepare" in log and "child process" in log
    assert first["sklearn"] is False
    assert int(first["vm_hwm_kb"]) / 1024 < RSS_LIMIT_MB  # type: ignore[call-overload]
    assert len(list((tmp_path / "models" / "heads").glob("*/seed-*/head.json"))) == 3
    later, log = _mailbot(config, "classify", "I was charged twice for one order.")
    assert "child process" not in log
    assert first["output"] == later["output"]


def test_a_worker_drafting_replies_to_every_sample_stays_small(
    tmp_path: Path, encoder_dir: Path
) -> None:
    # The whole pipeline as the worker runs it (parse, classify, language, extract, the
    # knowledge base, route, draft) over the sample mail, in one process.
    from mailbot.resources import data_dir

    config = _fresh_data_dir(tmp_path, encoder_dir)
    _mailbot(config, "model", "prepare")
    samples = sorted(str(p) for p in (data_dir() / "samples").glob("*.eml"))
    report, log = _mailbot(config, "ingest", *samples)
    assert f"{len(samples)} processed" in str(report["output"]), log
    assert report["sklearn"] is False
    assert int(report["vm_hwm_kb"]) / 1024 < RSS_LIMIT_MB, (  # type: ignore[call-overload]
        f"peak RSS {int(report['vm_hwm_kb']) / 1024:.0f} MB")  # type: ignore[call-overload]
