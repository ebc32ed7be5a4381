"""The rule that maps a model string to an engine (confroute.backend_choice), and its errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from confroute import backend_choice
from confroute.assembly import check_capabilities, servable
from confroute.backend import Capabilities
from confroute.backend_choice import choose_backend
from confroute.errors import ConfigurationError
from confroute.estimators import get
from confroute.settings import environment, settings_from


@pytest.fixture(params=[True, False], ids=["llama-cpp-installed", "no-llama-cpp"])
def llama_cpp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    installed = bool(request.param)
    monkeypatch.setattr(backend_choice, "llama_cpp_installed", lambda: installed)
    return installed


@pytest.mark.parametrize(
    ("model", "backend", "rest"),
    [
        ("transformers:Qwen/Qwen2.5-0.5B-Instruct", "transformers", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("llama.cpp:/models/q.gguf", "llama.cpp", "/models/q.gguf"),
        ("server:openai/gpt-oss-20b", "server", "openai/gpt-oss-20b"),
    ],
)
def test_a_prefix_names_the_engine_and_is_removed(model: str, backend: str, rest: str) -> None:
    choice = choose_backend(model)
    assert (choice.backend, choice.model) == (backend, rest)
    assert "prefix" in choice.rule


def test_a_prefix_that_contradicts_backend_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names the 'server' backend"):
        choose_backend("server:openai/x", "transformers")


def test_an_explicit_backend_wins_over_the_shape_of_the_string() -> None:
    assert choose_backend("openai/gpt-oss-20b", "server").backend == "server"
    assert choose_backend("openai/gpt-oss-20b", "transformers").backend == "transformers"
    assert choose_backend("qwen2.5-coder-0.5b-instruct", "transformers").backend == "transformers"


def test_bundled_names_and_gguf_files_take_llama_cpp_when_it_is_installed(
    llama_cpp: bool, tmp_path: Path
) -> None:
    expected = "llama.cpp" if llama_cpp else "transformers"
    assert choose_backend("qwen2.5-coder-0.5b-instruct").backend == expected
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    choice = choose_backend(gguf)
    assert (choice.backend, choice.model) == (expected, str(gguf))
    assert ("installed" in choice.rule) is llama_cpp


def test_an_estimator_that_reads_hidden_states_keeps_a_bundled_model_on_transformers(
    llama_cpp: bool,
) -> None:
    del llama_cpp
    choice = choose_backend("qwen2.5-coder-0.5b-instruct", needs={"hidden_state"})
    assert choice.backend == "transformers" and "hidden states" in choice.rule
    assert choose_backend("server:openai/x", needs={"hidden_state"}).backend == "server"


def test_a_directory_is_a_transformers_model(llama_cpp: bool, tmp_path: Path) -> None:
    del llama_cpp
    assert choose_backend(tmp_path).backend == "transformers"


@pytest.mark.parametrize(
    "model",
    [
        "hosted_vllm/Qwen/Qwen2.5-1.5B-Instruct",
        "ollama_chat/qwen2.5:0.5b",
        "ollama/llama3.2:1b",
        "openai/qwen/qwen-slm",
    ],
)
def test_litellm_strings_that_cannot_be_hub_ids_are_servers(model: str) -> None:
    choice = choose_backend(model)
    assert (choice.backend, choice.model) == ("server", model)


def test_a_string_that_is_both_a_litellm_model_and_a_hub_id_is_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        choose_backend("openai/gpt-oss-20b")
    message = str(raised.value)
    assert "backend='server'" in message and "'transformers:'" in message
    assert "local_api_base" in message


def test_a_server_url_says_server_for_a_hub_shaped_litellm_string() -> None:
    choice = choose_backend("openai/gpt-oss-20b", api_base="http://127.0.0.1:8000/v1")
    assert choice.backend == "server"


def test_a_hub_id_is_a_transformers_model() -> None:
    assert choose_backend("Qwen/Qwen2.5-0.5B-Instruct").backend == "transformers"


def test_an_unknown_backend_name_lists_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"llama\.cpp"):
        choose_backend("qwen2.5-coder-0.5b-instruct", "vllm")  # type: ignore[arg-type]


def test_settings_refuse_an_unknown_backend() -> None:
    with pytest.raises(ConfigurationError, match="local_backend must be 'auto'"):
        settings_from(local_backend="ollama")


def test_environment_reads_the_slm_backend_and_refuses_a_bad_one() -> None:
    env = environment({"CONFROUTE_SLM_BACKEND": "server", "CONFROUTE_SLM_API_KEY": "sk-slm"})
    assert env.slm_backend == "server"
    assert env.slm_api_key is not None and "sk-slm" not in repr(env)
    with pytest.raises(ConfigurationError, match="CONFROUTE_SLM_BACKEND"):
        environment({"CONFROUTE_SLM_BACKEND": "vllm"})


def test_settings_take_the_slm_server_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFROUTE_SLM_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CONFROUTE_SLM_API_KEY", "sk-slm-secret")
    settings = settings_from().with_env()
    assert settings.local_api_key is not None
    assert settings.local_api_key.get_secret_value() == "sk-slm-secret"
    assert "sk-slm-secret" not in repr(settings)


def test_an_estimator_the_backend_cannot_serve_names_backend_estimator_and_alternatives() -> None:
    capabilities = Capabilities(backend="server", hidden_state=False, entropies=False)
    local: Any = SimpleNamespace(name="qwen-slm", capabilities=capabilities)
    served = servable(local)
    assert "perplexity" in served and "p_true" in served
    assert "ood_probe" not in served and "mean_token_entropy" not in served
    with pytest.raises(ConfigurationError) as raised:
        check_capabilities(local, [get("mean_token_entropy")])
    message = str(raised.value)
    assert "'mean_token_entropy'" in message and "server backend" in message
    assert "perplexity" in message and "['entropies']" in message
