"""The thin layer between :mod:`confroute.llamacpp` and ``llama-cpp-python``.

Importing the optional package (with the install hint when it is missing), finding the GGUF
file of a model name, the detokenizer in the shape :class:`~confroute.stops.TokenTexts` reads,
and freeing a loaded model exactly once, before the interpreter tears its modules down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from confroute.errors import ConfigurationError
from confroute.models import BUNDLED_MODELS, bundled_gguf, known_names

__all__ = ["LlamaDetokenizer", "free_llama", "import_llama_cpp", "locate_gguf", "thread_counts"]


def thread_counts(n_threads: int | None) -> dict[str, int]:
    """``Llama``'s thread arguments: ``n_threads``, else ``OMP_NUM_THREADS``, else its defaults.

    One count serves decoding and prefill (llama-cpp-python's own defaults are half the cores
    for decoding and all of them for prefill). ``OMP_NUM_THREADS`` is what Ray sets in a task
    to its ``num_cpus``: two one-CPU sweep tasks on a 2-core machine, each prefilling on both
    cores, took 2.6x the wall time of one process running the same shards one after another
    (llama.cpp's threads spin while they wait for a core), so a set value is honoured.

    Raises:
        ConfigurationError: ``n_threads`` is below 1.
    """
    if n_threads is None:
        value = os.environ.get("OMP_NUM_THREADS", "").strip()
        n_threads = int(value) if value.isdigit() and int(value) > 0 else None
        if n_threads is None:
            return {}
    if n_threads < 1:
        raise ConfigurationError(f"n_threads must be >= 1, got {n_threads}.")
    return {"n_threads": n_threads, "n_threads_batch": n_threads}


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module.

    Raises:
        ConfigurationError: llama-cpp-python is not installed (says what to install).
    """
    try:
        import llama_cpp
    except ImportError as error:
        raise ConfigurationError(
            "The llama.cpp backend needs llama-cpp-python: pip install 'confroute[llamacpp]'."
        ) from error
    return llama_cpp


def locate_gguf(model: str | os.PathLike[str]) -> tuple[Path, str, str | None]:
    """The GGUF file, display name and (for a bundled model) fingerprint of ``model``.

    Raises:
        ConfigurationError: ``model`` is neither a bundled name nor an existing ``.gguf`` file.
    """
    text = os.fspath(model)
    bundled = BUNDLED_MODELS.get(text)
    if bundled is not None:
        return bundled_gguf(bundled), text, bundled.sha256
    path = Path(text).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path.resolve(), path.stem, None
    raise ConfigurationError(
        f"LlamaCppModel runs a bundled model ({', '.join(known_names())}) or a .gguf file; "
        f"{text!r} is neither (a missing file, a directory or a hub id). Use the transformers "
        "LocalModel for model directories and hub ids."
    )


def free_llama(llama: Any) -> None:
    """Free a ``llama_cpp.Llama``'s model and context (a no-op when already freed).

    Called by :class:`confroute.llamacpp.LlamaCppModel`'s ``weakref.finalize``: on
    ``close()``, when the wrapper is collected, or at interpreter exit while ``llama_cpp`` is
    still importable (its own ``__del__`` would otherwise run during module teardown).
    """
    close = getattr(llama, "close", None)
    if callable(close):
        close()


class LlamaDetokenizer:
    """llama.cpp's detokenizer in the shape :class:`~confroute.stops.TokenTexts` reads."""

    def __init__(self, llama: Any) -> None:
        """Wrap a loaded ``llama_cpp.Llama``."""
        self._llama = llama

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        """The text of ``token_ids`` (special tokens kept unless ``skip_special_tokens``)."""
        raw: bytes = self._llama.detokenize(token_ids, special=not skip_special_tokens)
        return raw.decode("utf-8", errors="replace")
