"""Which engine runs the local model: the one rule, written once.

A model string can mean four different things that look alike: a bundled short name, a hub id
(``Qwen/Qwen2.5-0.5B-Instruct``), a ``.gguf`` file or a directory on disk, and a LiteLLM model
string of a server (``hosted_vllm/Qwen/Qwen2.5-1.5B-Instruct``, ``ollama_chat/qwen2.5:0.5b``).
confroute never guesses between them. :func:`choose_backend` applies, in order:

1. An explicit ``backend=`` (``local_backend=`` in the settings, ``--slm-backend`` on the CLI,
   ``CONFROUTE_SLM_BACKEND``) other than ``"auto"`` wins.
2. A prefix names the engine and is removed: ``transformers:``, ``llama.cpp:`` or ``server:``.
3. A bundled short name, or a ``.gguf`` file that exists: ``llama.cpp`` when
   ``llama-cpp-python`` is importable (native GGUF, 4x faster on a CPU) and no chosen
   estimator reads hidden states (the probes: llama.cpp exposes no intermediate layer), else
   ``transformers``.
4. A directory that exists: ``transformers``.
5. ``PROVIDER/REST`` where ``PROVIDER`` is one of LiteLLM's providers: ``server`` when ``REST``
   cannot be a hub model name (it holds another ``/`` or a character such as ``:``), or when
   a server URL (``local_api_base``) is given. Otherwise the string is also a valid hub id
   (``openai/gpt-oss-20b`` is both) and the choice is refused with an error naming the ways to
   say which.
6. Anything else of the form ``org/name``: a hub id, ``transformers``.

Example:
    >>> choose_backend("server:openai/my-slm").backend
    'server'
    >>> choose_backend("hosted_vllm/Qwen/Qwen2.5-1.5B-Instruct").model
    'hosted_vllm/Qwen/Qwen2.5-1.5B-Instruct'
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from confroute.errors import ConfigurationError
from confroute.models import BUNDLED_MODELS
from confroute.settings import BackendName

if TYPE_CHECKING:
    from confroute.backend import LocalBackend
    from confroute.settings import RouterSettings

__all__ = ["PREFIXES", "BackendChoice", "choose_backend", "llama_cpp_installed", "load_backend"]

PREFIXES: dict[str, str] = {
    "transformers:": "transformers",
    "llama.cpp:": "llama.cpp",
    "server:": "server",
}
"""Prefixes of a model string that name its engine (removed before the model is loaded)."""

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHOICES = (
    "say which with backend='server' (local_backend= / --slm-backend / CONFROUTE_SLM_BACKEND) "
    "or the prefix 'server:', or backend='transformers' / the prefix 'transformers:' for a "
    "Hugging Face hub id"
)


@dataclass(frozen=True)
class BackendChoice:
    """The engine chosen for a model string, and why.

    Attributes:
        backend: ``"transformers"``, ``"llama.cpp"`` or ``"server"``.
        model: The model string to load (any prefix removed).
        rule: Which step of the rule chose it (logged, and shown by ``confroute models``).
    """

    backend: str
    model: str
    rule: str


def llama_cpp_installed() -> bool:
    """Whether ``llama-cpp-python`` can be imported (``pip install 'confroute[llamacpp]'``)."""
    return importlib.util.find_spec("llama_cpp") is not None


def _litellm_providers() -> frozenset[str]:
    import litellm

    return frozenset(str(getattr(p, "value", p)) for p in litellm.provider_list)


def choose_backend(
    model: str | os.PathLike[str],
    backend: BackendName = "auto",
    *,
    api_base: object | None = None,
    needs: Collection[str] = (),
) -> BackendChoice:
    """The engine for ``model`` by the module's rule (see the module docstring).

    Args:
        model: The model string or path.
        backend: An explicit engine, or ``"auto"``.
        api_base: The SLM server's URL, if one is given (rule 5).
        needs: The chosen estimators' :class:`~confroute.estimators.Requirement` names
            (rule 3).

    Raises:
        ConfigurationError: An unknown backend name, or a string that is both a LiteLLM model
            and a hub id with nothing to say which (the message names the choices).
    """
    if backend not in get_args(BackendName):
        raise ConfigurationError(
            f"Unknown backend {backend!r}; choose one of {list(get_args(BackendName))}."
        )
    text = os.fspath(model)
    for prefix, name in PREFIXES.items():
        if text.startswith(prefix):
            if backend not in ("auto", name):
                raise ConfigurationError(
                    f"The model {text!r} names the {name!r} backend but backend={backend!r} "
                    "was given; drop one of them."
                )
            return BackendChoice(name, text[len(prefix) :], f"prefix {prefix!r}")
    if backend != "auto":
        return BackendChoice(backend, text, f"backend={backend!r}")
    path = Path(text).expanduser()
    if "hidden_state" in needs:
        fast, why_fast = "transformers", "an estimator reads hidden states"
    elif llama_cpp_installed():
        fast, why_fast = "llama.cpp", "llama-cpp-python is installed"
    else:
        fast, why_fast = "transformers", "no llama-cpp-python"
    if text in BUNDLED_MODELS:
        return BackendChoice(fast, text, f"bundled model, {why_fast}")
    if path.is_file() and path.suffix == ".gguf":
        return BackendChoice(fast, text, f".gguf file, {why_fast}")
    if path.is_dir():
        return BackendChoice("transformers", text, "a model directory")
    provider, _, rest = text.partition("/")
    if rest and provider in _litellm_providers():
        if "/" in rest or not _HUB_NAME.match(rest):
            return BackendChoice("server", text, f"LiteLLM provider {provider!r}")
        if api_base is not None:
            return BackendChoice("server", text, f"LiteLLM provider {provider!r} with a URL")
        raise ConfigurationError(
            f"{text!r} is both a LiteLLM model string (provider {provider!r}) and a Hugging "
            f"Face hub id; {_CHOICES}. A server URL (local_api_base=) also means 'server'."
        )
    return BackendChoice("transformers", text, "a hub id or model name")


def load_backend(choice: BackendChoice, settings: RouterSettings) -> LocalBackend:
    """Load the engine ``choice`` names, with the settings it reads.

    The SLM server's URL and key come from ``settings`` (``local_api_base`` /
    ``local_api_key``), else from ``CONFROUTE_SLM_API_BASE`` / ``CONFROUTE_SLM_API_KEY``.

    Raises:
        ConfigurationError: The engine's package is missing (the message says what to
            install), or the engine cannot load the model.
    """
    if choice.backend == "llama.cpp":
        from confroute.llamacpp import LlamaCppModel

        return LlamaCppModel(choice.model)
    if choice.backend == "server":
        from confroute.server_backend import ServerModel

        filled = settings.with_env()
        return ServerModel(
            choice.model,
            api_base=filled.local_api_base,
            api_key=filled.local_api_key,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )
    from confroute.local import LocalModel

    return LocalModel(choice.model, device=settings.device)
