"""`mailbot model prepare / convert / list / verify`, driven through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import ModelSettings
from mailbot.engine import Generator, ModelRegistry
from mailbot.engine.manifest import MANIFEST_NAME, read_manifest
from mailbot.errors import ExitCode


class Mailbot:
    """Runs `mailbot --config <tmp>/mailbot.toml ...` in-process and captures its output."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.config = root / "mailbot.toml"
        self.config.write_text('data_dir = "var"\n', encoding="utf-8")
        self.models = root / "var" / "models"
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = run_cli(cli, ["--config", str(self.config), *args])
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def mailbot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Mailbot:
    return Mailbot(tmp_path, capsys)


def test_every_model_command_has_help(mailbot: Mailbot) -> None:
    code, out, _ = mailbot("model", "--help")
    assert code == 0
    for name in ("prepare", "convert", "list", "verify"):
        assert name in out
        code, sub, _ = mailbot("model", name, "--help")
        assert code == 0 and len(sub.splitlines()[2].strip()) > 10, sub


def test_prepare_creates_then_does_nothing_then_redoes_with_force(mailbot: Mailbot) -> None:
    code, out, _ = mailbot("model", "prepare")
    target = mailbot.models / "all-MiniLM-L6-v2"
    assert code == 0 and f"created {target}" in out
    manifest = read_manifest(target)
    mtime = (target / "model.bin").stat().st_mtime_ns

    code, out, _ = mailbot("model", "prepare")
    assert code == 0 and "already prepared" in out and "nothing to do" in out
    assert (target / "model.bin").stat().st_mtime_ns == mtime

    code, out, _ = mailbot("model", "prepare", "--force", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["created"] is True and report["version"] == manifest.version
    assert (target / "model.bin").stat().st_mtime_ns != mtime
    # Nothing half-written is left beside it, and the worker can load it.
    # (beside it: the seed heads prepare trains on it, so the worker never has to)
    dirs = sorted(p.name for p in mailbot.models.iterdir() if p.is_dir())
    assert dirs == ["all-MiniLM-L6-v2", "heads"]
    assert [h["head"] for h in report["seed_heads"]] == ["intent", "priority", "sentiment"]
    assert ModelRegistry(_settings(), mailbot.models).encoder().dim == 384


def test_two_prepares_at_once_leave_one_valid_model(mailbot: Mailbot) -> None:
    command = [sys.executable, "-m", "mailbot", "--config", str(mailbot.config)]
    command += ["model", "prepare", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    created = sorted(json.loads(out)["created"] for out, _ in outputs)
    assert created == [False, True]
    code, out, _ = mailbot("model", "verify")
    assert code == 0 and out.count(": ok") == 1


def test_prepare_replaces_a_corrupt_model(mailbot: Mailbot, encoder_dir: Path) -> None:
    target = shutil.copytree(encoder_dir, mailbot.models / "all-MiniLM-L6-v2")
    (target / "model.bin").write_bytes(b"not a model")
    code, out, _ = mailbot("model", "list")
    assert "INVALID" in out
    code, out, _ = mailbot("model", "prepare")
    assert code == 0 and "created" in out
    code, out, _ = mailbot("model", "verify")
    assert code == 0 and f"{target}: ok" in out


def test_list_shows_models_and_flags_damaged_ones(mailbot: Mailbot, encoder_dir: Path) -> None:
    code, out, _ = mailbot("model", "list")
    assert code == 0 and "no models" in out and "mailbot model prepare" in out

    shutil.copytree(encoder_dir, mailbot.models / "all-MiniLM-L6-v2")
    broken = shutil.copytree(encoder_dir, mailbot.models / "broken")
    (broken / "tokenizer.json").unlink()
    (mailbot.models / "heads" / "intent").mkdir(parents=True)  # not a model: not listed
    code, out, _ = mailbot("model", "list", "--json")
    assert code == 0
    listed = {m["name"]: m for m in json.loads(out)["models"]}
    assert sorted(listed) == ["all-MiniLM-L6-v2", "broken"]
    assert listed["all-MiniLM-L6-v2"]["valid"] is True
    assert listed["all-MiniLM-L6-v2"]["manifest"]["kind"] == "encoder"
    assert listed["broken"]["valid"] is False
    assert "tokenizer.json is missing" in listed["broken"]["problem"]

    code, out, _ = mailbot("model", "list")
    assert "all-MiniLM-L6-v2" in out and "encoder" in out and "int8" in out


def test_verify_catches_a_flipped_byte_that_list_does_not(
    mailbot: Mailbot, encoder_dir: Path
) -> None:
    target = shutil.copytree(encoder_dir, mailbot.models / "all-MiniLM-L6-v2")
    data = bytearray((target / "model.bin").read_bytes())
    data[-100] ^= 0x01
    (target / "model.bin").write_bytes(bytes(data))
    code, out, _ = mailbot("model", "list", "--json")
    assert json.loads(out)["models"][0]["valid"] is True  # sizes only: fast
    code, out, _ = mailbot("model", "verify", "all-MiniLM-L6-v2")
    assert code == ExitCode.DATA
    assert "corrupt" in out and "SHA-256" in out


@pytest.mark.parametrize(
    ("make_source", "expected"),
    [
        (lambda root: root / "nope", "does not exist"),
        (lambda root: root, "no config.json"),
        (lambda root: _write(root / "weights.bin", "x"), "is not a directory"),
        (
            lambda root: (
                _write(root / "odd" / "config.json", '{"model_type": "no-such-model"}').parent
            ),
            "cannot read the model configuration",
        ),
    ],
)
def test_convert_rejects_a_bad_source_clearly(
    mailbot: Mailbot, make_source: Callable[[Path], Path], expected: str
) -> None:
    source = make_source(mailbot.root)
    code, out, err = mailbot("model", "convert", str(source), "dest")
    assert code == ExitCode.NO_INPUT
    assert expected in err and str(source) in err
    assert "Traceback" not in err
    assert not (mailbot.models / "dest").exists()


def test_convert_an_unreachable_hub_id_explains_why(mailbot: Mailbot) -> None:
    code, _, err = mailbot("model", "convert", "no-such-org/no-such-model", "dest")
    assert code == ExitCode.NO_INPUT
    assert "no-such-org/no-such-model" in err and "local model directory" in err


def test_convert_tiny_generator_into_the_models_dir(
    mailbot: Mailbot, tiny_generator_hf_dir: Path
) -> None:
    from tests.support.tiny_generator import decoder_line

    code, out, err = mailbot("model", "convert", str(tiny_generator_hf_dir), "tiny", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "generator" and report["quantization"] == "int8"
    assert report["architecture"] == "Qwen2ForCausalLM"
    target = mailbot.models / "tiny"
    assert (target / MANIFEST_NAME).is_file() and (target / "tokenizer.json").is_file()

    registry = ModelRegistry(_settings(generator="tiny"), mailbot.models)
    generator = registry.generator()
    assert generator is not None
    text = "Hi, my parcel has not arrived, where is my package?"
    [result] = generator.generate([decoder_line(text)], max_new_tokens=5)
    assert result.text.strip() == "shipping"

    # A second convert to the same place needs --force; with it, the model is replaced.
    code, _, err = mailbot("model", "convert", str(tiny_generator_hf_dir), "tiny")
    assert code == ExitCode.NO_INPUT and "--force" in err
    code, out, _ = mailbot(
        "model",
        "convert",
        str(tiny_generator_hf_dir),
        "tiny",
        "--force",
        "--quantization",
        "float32",
    )
    assert code == 0 and read_manifest(target).quantization == "float32"


def test_convert_detects_seq2seq(mailbot: Mailbot, tiny_seq2seq_hf_dir: Path) -> None:
    dest = mailbot.root / "elsewhere" / "t5"
    code, out, err = mailbot("model", "convert", str(tiny_seq2seq_hf_dir), str(dest))
    assert code == 0, err
    assert read_manifest(dest).kind == "seq2seq"
    assert Generator.load(dest).generate(["Email: where is my parcel?"], 4)[0].text


def test_convert_never_deletes_a_directory_that_is_not_a_model(
    mailbot: Mailbot, tiny_generator_hf_dir: Path
) -> None:
    precious = _write(mailbot.root / "notes" / "keep.txt", "important").parent
    code, _, err = mailbot("model", "convert", str(tiny_generator_hf_dir), str(precious), "--force")
    assert code == ExitCode.NO_INPUT and "not a model directory" in err
    assert (precious / "keep.txt").read_text() == "important"


def test_convert_without_the_extra_says_what_to_install(
    mailbot: Mailbot, tiny_generator_hf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    code, _, err = mailbot("model", "convert", str(tiny_generator_hf_dir), "tiny")
    assert code == ExitCode.NO_INPUT
    assert "pip install 'mailbot[convert]'" in err and "torch" in err


def test_bad_quantization_is_a_usage_error(mailbot: Mailbot, tmp_path: Path) -> None:
    code, _, err = mailbot("model", "convert", str(tmp_path), "x", "--quantization", "int3")
    assert code == ExitCode.USAGE and "int3" in err


def _settings(**overrides: str) -> ModelSettings:
    return ModelSettings(**overrides)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
