"""The library probes that ``benchmarks/reliability_probes.py`` runs (issue 19, RELIABILITY.md).

Each check is a minimal reproduction on the test fakes and returns an ``Outcome``: whether the
property held, and the value it observed. Shared set-up (as in issue 19):
``slm = ScriptedLocalModel(default=("x", (0.2,) * 3))`` and a ``FaultServer`` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import litellm
from reliability_probes import Outcome

from confroute import ConfRouteError, ConfRouter, RoutingDecision
from confroute.errors import EscalationError
from confroute.escalation import Escalation
from confroute.serving.limits import ServerLimits
from confroute.serving.server import BackgroundServer
from tests.fakes import ScriptedLocalModel
from tests.faultserver import FaultServer, echo

ROOT = Path(__file__).resolve().parents[1]
CANARY = "sk-CANARY-0123456789abcdef"
USERINFO_SECRET = "sk-USERINFO-SECRET-9876"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
SURE = (0.99, 0.98, 0.97)
TOOL_TEXTS = {
    "list name": '<tool_call>{"name": ["f"], "arguments": {}}</tool_call>',
    "deep nesting": "<tool_call>" + "[" * 5000 + "]" * 5000 + "</tool_call>",
    "NaN argument": '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>',
}

litellm.suppress_debug_info = True
logging.getLogger().setLevel(logging.CRITICAL)
for _name in ("LiteLLM", "confroute", "aiohttp", "httpx"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


class Env:
    """The fakes every probe shares: one local model, one fault server, one confroute server."""

    def __init__(self) -> None:
        self.slm = ScriptedLocalModel(
            default=("x", (0.2,) * 3),
            script={"sure?": ("391", SURE)}
            | {f"tool {k}": (v, (0.99,) * 4) for k, v in TOOL_TEXTS.items()},
        )
        self.faults = FaultServer(hang_s=5.0).start()
        self.served: list[RoutingDecision] = []
        # body_timeout 5 s, so that the read-timeout probe (which waits 10 s) sees it fire;
        # the default is ServerLimits().body_timeout (30 s), settable with --body-timeout
        self.server = BackgroundServer(
            self.router(hooks=[self.served.append], max_retries=0, timeout=5.0),
            limits=ServerLimits(body_timeout=5.0),
        ).start()

    def router(self, **options: Any) -> ConfRouter:
        """A router on the shared fakes (threshold 0.5: "x" escalates, "391" stays local)."""
        settings: dict[str, Any] = {
            "threshold": 0.5,
            "api_base": self.faults.base_url,
            "api_key": "k",
        } | options
        return ConfRouter(self.slm, "openai/p", **settings)

    def close(self) -> None:
        """Stop both servers."""
        self.server.close()
        self.faults.stop()


def _caught(call: Callable[[], Any]) -> str:
    """``ok``, or the name of what ``call`` raised (``ConfRouteError`` subclasses say so)."""
    try:
        call()
    except ConfRouteError as error:
        return f"ConfRouteError/{type(error).__name__}"
    except Exception as error:
        return type(error).__name__
    return "ok"


# -- issue 19, items 1-10 --------------------------------------------------------------------


def api_key_in_locals(env: Env) -> Outcome:
    """issue 19.1: `TracebackException(capture_locals=True)` of an `EscalationError` (HTTP 500,
    `raise`) holds no api_key.
    """
    router = env.router(api_key=CANARY, max_retries=0, on_escalation_error="raise")
    try:
        router.route("q [[fault:500]]")
    except EscalationError as error:
        frames = traceback.TracebackException.from_exception(error, capture_locals=True)
        found = CANARY in "".join(frames.format())
        return Outcome(not found, "key in a frame's locals" if found else "")
    return Outcome(False, "no EscalationError was raised")


def userinfo_key(env: Env) -> Outcome:
    """issue 19.2: a key in `api_base` userinfo is absent from `repr(router)`,
    `repr(Escalation)`, `ChatConfRoute.model_dump_json`/`dumps`, `ConfRouteLLM.to_json`.
    """
    from langchain_core.load import dumps

    from langchain_confroute import ChatConfRoute
    from llamaindex_confroute import ConfRouteLLM

    base = f"http://u:{USERINFO_SECRET}@127.0.0.1:{env.faults.port}/v1"
    options: dict[str, Any] = {"api_base": base, "api_key": "k", "threshold": 0.5}
    chat = ChatConfRoute(local_model=env.slm, strong_model="openai/p", **options)
    llm = ConfRouteLLM(env.slm, "openai/p", **options)
    texts: dict[str, Callable[[], str]] = {
        "repr(router)": lambda: repr(env.router(api_base=base)),
        "repr(Escalation)": lambda: repr(Escalation("openai/p", api_base=base)),
        "ChatConfRoute.model_dump_json": chat.model_dump_json,
        "dumps(ChatConfRoute)": lambda: dumps(chat),
        "ConfRouteLLM.to_json": llm.to_json,
    }
    leaked = [where for where, text in texts.items() if USERINFO_SECRET in text()]
    return Outcome(not leaked, "secret in " + ", ".join(leaked) if leaked else "")


def abandoned_stream(env: Env) -> Outcome:
    """issue 19.3: `stream`, `astream` and `ChatConfRoute.stream` abandoned after one chunk
    each report one decision.
    """
    from langchain_confroute import ChatConfRoute

    counts: dict[str, int] = {}

    def sync_stream(router: ConfRouter) -> None:
        chunks = iter(router.stream("q"))
        next(chunks)
        del chunks

    def async_stream(router: ConfRouter) -> None:
        async def first() -> None:
            chunks = router.astream("q")
            await chunks.__anext__()

        asyncio.run(first())

    def chat_stream(router: ConfRouter) -> None:
        chunks = iter(ChatConfRoute(router=router).stream("q"))
        next(chunks)
        del chunks

    for name, abandon in (
        ("stream", sync_stream),
        ("astream", async_stream),
        ("ChatConfRoute.stream", chat_stream),
    ):
        hooks: list[RoutingDecision] = []
        abandon(env.router(hooks=[hooks.append]))
        gc.collect()
        time.sleep(0.5)
        counts[name] = len(hooks)
    observed = ", ".join(f"{k} {v}" for k, v in counts.items())
    return Outcome(all(v == 1 for v in counts.values()), f"decisions: {observed} (want 1 each)")


def batch_under_raise(env: Env) -> Outcome:
    """issue 19.4: `ChatConfRoute.batch` of 4 inputs, one failing, under `raise`: 4 decisions
    and 3 upstream calls.
    """
    from langchain_confroute import ChatConfRoute

    env.faults.reset()
    hooks: list[RoutingDecision] = []
    router = env.router(hooks=[hooks.append], max_retries=0, on_escalation_error="raise")
    local_before = len(env.slm.calls)
    ChatConfRoute(router=router).batch(
        ["a", "b [[fault:500]]", "c", "sure?"], return_exceptions=True
    )
    upstream, local = len(env.faults.requests), len(env.slm.calls) - local_before
    observed = f"4 inputs: {len(hooks)} decisions, {upstream} upstream calls, {local} local runs"
    return Outcome(len(hooks) == 4 and upstream == 3, observed + " (want 4 decisions, 3 calls)")


def route_batch_keeps_answers(env: Env) -> Outcome:
    """issue 19.4: `route_batch` under `raise` returns the other items' answers when one item
    fails.
    """
    import inspect

    router = env.router(max_retries=0, on_escalation_error="raise")
    prompts = ["sure?", "b [[fault:500]]"]
    if "return_exceptions" not in inspect.signature(router.route_batch).parameters:
        raised = _caught(lambda: router.route_batch(prompts))
        return Outcome(False, f"no return_exceptions flag; one failure raises {raised}")
    batch: Any = router.route_batch  # the flag is not on every version
    results = batch(prompts, return_exceptions=True)
    kinds = [type(r).__name__ for r in results]
    ok = getattr(results[0], "text", None) == "391" and isinstance(results[1], Exception)
    return Outcome(ok, f"items: {kinds}")


def tool_call_text(env: Env) -> Outcome:
    """issue 19.5: local tool-call text with a list as name, 5000-deep brackets or a NaN
    argument is escalated as `malformed_tool_call`.
    """
    router = env.router(max_retries=0)
    seen = []
    for case in TOOL_TEXTS:
        reason: str
        try:
            reason = router.route(f"tool {case}", tools=[TOOL]).decision.reason
        except Exception as error:
            reason = type(error).__name__
        seen.append(f"{case}: {reason}")
    ok = all(s.endswith("malformed_tool_call") for s in seen)
    return Outcome(ok, "; ".join(seen) + " (want malformed_tool_call)")


def library_bad_values(env: Env) -> Outcome:
    """issue 19.7: `route` with a lone surrogate, `tool_calls: "zz"`, a 5000-deep text part,
    `temperature="hot"`, `stop=123` raises a `ConfRouteError`.
    """
    router = env.router(max_retries=0)
    route: Any = router.route  # the wrong types are the point
    nested: Any = [{"type": "text", "text": "q"}]
    for _ in range(5000):
        nested = [nested]
    cases: dict[str, Callable[[], Any]] = {
        "content 'x \\ud800'": lambda: router.route("x \ud800"),
        "tool_calls 'zz'": lambda: router.route(
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": "zz"},
                {"role": "user", "content": "b"},
            ]
        ),
        "nested text part": lambda: router.route([{"role": "user", "content": nested}]),
        "temperature 'hot'": lambda: route("q", temperature="hot"),
        "stop 123": lambda: route("q", stop=123),
    }
    seen = {name: _caught(call) for name, call in cases.items()}
    bad = {k: v for k, v in seen.items() if not v.startswith("ConfRouteError")}
    observed = ", ".join(f"{k} -> {v}" for k, v in bad.items())
    return Outcome(not bad, observed if bad else "each a ConfRouteError")


def silent_wrong_answers(env: Env) -> Outcome:
    """issue 19.8: `stop=[""]`, `max_new_tokens=0` or `1.5`, and blank user content in a
    message list are refused.
    """
    router = env.router(max_retries=0)
    route: Any = router.route  # the wrong types are the point
    env.faults.reset()

    def empty_stop() -> str:
        try:
            text = router.route("q", stop=[""]).text
        except ConfRouteError as error:
            return f"refused ({type(error).__name__})"
        sent = [r for r in env.faults.requests if r.body.get("stop") == [""]]
        return f"answer {text!r}" + (", [''] forwarded" if sent else "")

    def refused(call: Callable[[], Any]) -> str:
        got = _caught(call)
        return "refused" if got.startswith("ConfRouteError") else f"accepted ({got})"

    seen = {
        "stop=['']": empty_stop(),
        "max_new_tokens=0": refused(lambda: router.route("q", max_new_tokens=0)),
        "max_new_tokens=1.5": refused(lambda: route("q", max_new_tokens=1.5)),
        "blank user content": refused(lambda: router.route([{"role": "user", "content": "  "}])),
    }
    ok = all(v.startswith("refused") for v in seen.values())
    return Outcome(ok, ", ".join(f"{k}: {v}" for k, v in seen.items()))


def import_order(env: Env) -> Outcome:
    """issue 19.9: `import litellm` before `import confroute`, no environment set, sockets
    refused: no connection attempt, or (what confroute cannot prevent: litellm fetches at its
    own import) a warning that names LITELLM_LOCAL_MODEL_COST_MAP.
    """
    script = textwrap.dedent(
        """
        import socket
        attempts = []
        def refuse(self, address, *args):
            attempts.append(address)
            raise OSError("network disabled by the probe")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)
        import litellm
        import confroute
        print("ATTEMPTS", len(attempts))
        """
    )
    env_vars = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env_vars["PYTHONPATH"] = os.pathsep.join([str(ROOT / "shared"), str(ROOT)])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], env=env_vars, capture_output=True, text=True, timeout=100
    )
    took = time.monotonic() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("ATTEMPTS")]
    if not lines:
        return Outcome(False, f"exit {done.returncode}: {done.stderr[-200:]}")
    attempts = int(lines[0].split()[1])
    if attempts == 0:
        return Outcome(True, f"no connection attempt, import took {took:.1f} s")
    # confroute cannot undo litellm's own import-time fetch; the issue accepts saying precisely
    # what to set, which confroute does once, as a warning naming the variable
    warned = "LITELLM_LOCAL_MODEL_COST_MAP" in done.stderr
    return Outcome(
        warned,
        f"{attempts} connection attempt(s) by litellm's own import ({took:.1f} s); confroute "
        + ("warned to set LITELLM_LOCAL_MODEL_COST_MAP=True" if warned else "gave no warning"),
    )


def documentation(env: Env) -> Outcome:
    """issue 19.10: RELIABILITY.md lists no strict-xfail gaps that tests/ lacks;
    docs/serving.md gives the request body limit.
    """
    reliability = (ROOT / "RELIABILITY.md").read_text()
    serving = (ROOT / "docs" / "serving.md").read_text()
    claims = re.findall(r"Known gaps?[^.]{0,40}strict `?xfail", reliability)
    strict = [
        path.name
        for path in (ROOT / "tests").rglob("*.py")
        if re.search(r"xfail\([^)]*strict=True", path.read_text(encoding="utf-8"))
    ]
    problems = []
    if claims and not strict:
        problems.append("RELIABILITY.md lists strict-xfail gaps that tests/ does not have")
    if "MiB" not in serving and "client_max_size" not in serving:
        problems.append("docs/serving.md does not give the request body limit")
    return Outcome(not problems, "; ".join(problems) if problems else "")


def escalation_wall_time(env: Env) -> Outcome:
    """issue 19.10: one escalation with `timeout=1`, `max_retries=0` against a hang returns
    within 1.5 s (under this run's load).
    """
    router = env.router(timeout=1.0, max_retries=0)
    router.route("warm-up")  # LiteLLM's first call builds its clients: not the timer's fault
    started = time.perf_counter()
    router.route("q [[fault:hang]]")
    took = time.perf_counter() - started
    return Outcome(took < 1.5, f"timeout 1 s x 1 attempt: took {took:.2f} s")


# -- what RELIABILITY.md already reported as holding ------------------------------------------


def concurrent_mixed(env: Env) -> Outcome:
    """200 concurrent `route`/`aroute`/`stream`/`astream` calls (a third local, a third
    escalated, a third against 500/429/hang/drop): own answer and one decision each.
    """
    n = 200
    faults = ["500", "429", "hang", "drop"]
    env.faults.reset()
    hooks: list[RoutingDecision] = []
    slm = ScriptedLocalModel(
        default=("local fallback", (0.2,) * 3),
        script={f"c{i} local": (f"local-{i}", SURE) for i in range(n)},
    )
    router = ConfRouter(
        slm, "openai/p", threshold=0.5, api_base=env.faults.base_url, api_key="k",
        timeout=5.0, max_retries=0, hooks=[hooks.append],
    )  # fmt: skip

    def question(i: int) -> str:
        if i % 3 == 0:
            return f"c{i} local"
        if i % 3 == 1:
            return f"c{i} escalated"
        fault = faults[(i // 3) % 4]
        if fault == "drop" and i % 4 >= 2:  # a drop mid-stream raises by design: not here
            fault = "500"
        return f"c{i} failing [[fault:{fault}]]"

    def expected(i: int) -> str:
        return [f"local-{i}", echo("p", question(i)), "local fallback"][i % 3]

    def sync_stream(q: str) -> str:
        return "".join(c.text for c in router.stream(q))

    async def astream(q: str) -> str:
        return "".join([c.text async for c in router.astream(q)])

    async def ask(i: int) -> str:
        q = question(i)
        mode = i % 4
        if mode == 0:
            return (await asyncio.to_thread(router.route, q)).text
        if mode == 1:
            return (await router.aroute(q)).text
        if mode == 2:
            return await asyncio.to_thread(sync_stream, q)
        return await astream(q)

    async def everything() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(ask(i) for i in range(n))), 80)

    started = time.perf_counter()
    answers = asyncio.run(everything())
    took = time.perf_counter() - started
    wrong_ones = [(question(i), a) for i, a in enumerate(answers) if a != expected(i)]
    wrong = len(wrong_ones)
    unique = len({d.id for d in hooks})
    observed = f"{n} requests in {took:.1f} s: {wrong} wrong answers, {len(hooks)} decisions"
    if wrong_ones:
        observed += f"; first: {wrong_ones[0][0]!r} got {wrong_ones[0][1][:60]!r}"
    return Outcome(wrong == 0 and len(hooks) == n == unique, observed)


def canary_key(env: Env) -> Outcome:
    """a canary key (DEBUG logging; ok/500/401; both policies) is in no log line, repr,
    decision, exception, LangChain `dumps`, LlamaIndex `to_json`.
    """
    from langchain_core.load import dumps

    from langchain_confroute import ChatConfRoute
    from llamaindex_confroute import ConfRouteLLM

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    texts: list[str] = []
    try:
        for policy in ("return_local", "raise"):
            hooks: list[RoutingDecision] = []
            router = env.router(
                api_key=CANARY, max_retries=0, on_escalation_error=policy, hooks=[hooks.append]
            )
            for fault in ("ok", "500", "401"):
                try:
                    texts.append(repr(router.route(f"q [[fault:{fault}]]")))
                except EscalationError as error:
                    texts += [str(error), repr(error), repr(error.errors)]
            texts += [repr(router), repr(hooks)]
        options: dict[str, Any] = {"api_base": env.faults.base_url, "api_key": CANARY}
        chat = ChatConfRoute(local_model=env.slm, strong_model="openai/p", **options)
        llm = ConfRouteLLM(env.slm, "openai/p", **options)
        texts += [repr(chat.invoke("q")), chat.model_dump_json(), dumps(chat), llm.to_json()]
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
    texts.append(stream.getvalue())
    sent = sum(r.authorization == f"Bearer {CANARY}" for r in env.faults.requests)
    leaked = sum(CANARY in t for t in texts)
    observed = f"{len(texts)} texts checked, {leaked} with the key; key sent {sent} times"
    return Outcome(leaked == 0 and sent > 0, observed)
