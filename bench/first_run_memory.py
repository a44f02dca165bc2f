"""Peak RSS of `mailbot classify` in a fresh data directory: the first run and a later one.

Three fresh processes per case, each measured from its own /proc/self/status (VmHWM):

- without `model prepare`: the first run builds the seed heads (in a child process), the
  second finds them;
- after `model prepare`: both runs only load them.

The ratio first/later is what matters (target: every run < 300 MB, the first included).
Usage: bench/first_run_memory.py [--models DIR]  (DIR holds all-MiniLM-L6-v2; default: a
temporary folder where it is prepared once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailbot.engine.runtime import cpu_summary as cpu_name

ROOT = Path(__file__).resolve().parents[1]
ENCODER = "all-MiniLM-L6-v2"
TEXT = "I ordered a kettle two weeks ago and it still has not arrived, where is my parcel?"

# Runs the real CLI in this process, then reports its own peak memory and what it imported.
MEASURED = """
import json, sys
from mailbot.cli import cli
from mailbot.cli.common import run_cli
code = run_cli(cli, sys.argv[1:])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Vm"))
print(json.dumps({"code": code, "vm_hwm_kb": int(status["VmHWM"].split()[0]),
                  "sklearn": "sklearn" in sys.modules}))
"""


def fresh_config(root: Path, encoder_dir: Path) -> Path:
    """A data directory of its own, with the encoder linked into a models folder."""
    models = root / "models"
    models.mkdir(parents=True)
    (models / encoder_dir.name).symlink_to(encoder_dir, target_is_directory=True)
    config = root / "mailbot.toml"
    config.write_text(f'data_dir = "{root / "var"}"\n[models]\ndir = "{models}"\n', "utf-8")
    return config


def measure(config: Path, *args: str) -> dict[str, object]:
    """Run `mailbot --config CONFIG ARGS` in a fresh process: exit code, peak MB, seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, "--config", str(config), *args],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"mailbot {' '.join(args)} failed:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["code"] != 0:
        raise SystemExit(f"mailbot {' '.join(args)} exited {report['code']}:\n{done.stderr}")
    return {
        "peak_mb": report["vm_hwm_kb"] / 1024,
        "seconds": seconds,
        "sklearn": report["sklearn"],
        "stderr": done.stderr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from mailbot.engine.convert import prepare_default_encoder

    models = args.models or Path(tempfile.gettempdir()) / "mailbot-bench-models"
    encoder_dir = prepare_default_encoder(models, ENCODER).path
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); encoder {ENCODER}")
    with tempfile.TemporaryDirectory(prefix="mailbot-first-run-") as tmp:
        plain = fresh_config(Path(tmp) / "plain", encoder_dir)
        first = measure(plain, "classify", TEXT)
        later = measure(plain, "classify", TEXT)
        prepared = fresh_config(Path(tmp) / "prepared", encoder_dir)
        prepare = measure(prepared, "model", "prepare")
        after_first = measure(prepared, "classify", TEXT)
        after_later = measure(prepared, "classify", TEXT)
    rows = [
        ("no prepare, first classify", first),
        ("no prepare, later classify", later),
        ("model prepare", prepare),
        ("after prepare, first classify", after_first),
        ("after prepare, later classify", after_later),
    ]
    for label, row in rows:
        print(
            f"{label:<31} peak RSS {row['peak_mb']:6.1f} MB  {row['seconds']:6.1f} s"
            f"  scikit-learn imported: {'yes' if row['sklearn'] else 'no'}"
        )
    peak = {label: float(row["peak_mb"]) for label, row in rows}  # type: ignore[arg-type]
    worst = max(mb for label, mb in peak.items() if "classify" in label)
    print(f"first/later peak, no prepare: {peak[rows[0][0]] / peak[rows[1][0]]:.2f}x")
    print(f"first/later peak, after prepare: {peak[rows[3][0]] / peak[rows[4][0]]:.2f}x")
    print(f"highest classify peak: {worst:.1f} MB (target < 300 MB)")


if __name__ == "__main__":
    main()
