"""HTML-to-text speed: mailbot's conversion (CSS cascade, hidden text dropped) against a bare
baseline (lxml parse + inscriptis, nothing dropped), same process, same inputs.

Inputs: the shipped HTML-only sample, the HTML cases of the injection corpus, and a synthetic
newsletter-like mail (200 table rows, 150 descendant-selector rules whose classes all occur:
the slow case for the cascade, since no rule can be skipped).

    .venv/bin/python bench/html_speed.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inscriptis.html_engine import Inscriptis  # noqa: E402
from inscriptis.model.config import ParserConfig  # noqa: E402
from lxml.html import document_fromstring  # noqa: E402

from mailbot.parse.html import convert_html  # noqa: E402
from mailbot.resources import data_dir  # noqa: E402

_CONFIG = ParserConfig(display_links=False, display_images=False)


def _html_of(raw: bytes) -> str:
    message = message_from_bytes(raw)
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise ValueError("no HTML part")


def _newsletter() -> str:
    rules = "".join(f".c{i} td p{{color:#{i % 256:02x}2020;font-size:{10 + i % 5}px}}"
                    for i in range(150))
    rows = "".join(f"<tr><td class='c{i}'><p style='color:#333'>Row {i} about order "
                   f"A{i:05d}</p></td></tr>" for i in range(200))
    return f"<html><head><style>{rules}</style></head><body><table>{rows}</table></body></html>"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _rate(run: Callable[[], object], seconds: float) -> float:
    """Best of five: calls per second."""
    best = 0.0
    for _ in range(5):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            run()
            count += 1
        best = max(best, count / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per timing round")
    args = parser.parse_args()
    inputs = {"sample 12_html_only": _html_of((data_dir() / "samples" / "12_html_only.eml")
                                              .read_bytes())}
    for path in sorted((ROOT / "tests" / "data" / "injection").glob("*.eml")):
        if b"text/html" in path.read_bytes():
            inputs[f"corpus {path.stem}"] = _html_of(path.read_bytes())
    inputs["synthetic newsletter"] = _newsletter()
    print(f"CPU: {_cpu()}")
    ratios = []
    for label, html in inputs.items():
        def baseline(html: str = html) -> str:
            return str(Inscriptis(document_fromstring(html), _CONFIG).get_text())

        def mailbot(html: str = html) -> str:
            return convert_html(html).text

        base, ours = _rate(baseline, args.seconds), _rate(mailbot, args.seconds)
        ratios.append(ours / base)
        print(f"{label:32} baseline {1000 / base:7.2f} ms   mailbot {1000 / ours:7.2f} ms   "
              f"ratio {ours / base:5.2f}")
    print(f"median ratio mailbot / baseline (speed): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
