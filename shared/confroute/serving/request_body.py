r"""Read a request body under a deadline and parse it as JSON that the router can take.

Everything a client can put in a body that Python's ``json`` accepts but the rest of the server
cannot is refused here, with an OpenAI-shaped 4xx that names the field: a body that is late
(408) or too large (413), not JSON, nested too deep, a non-finite number (``NaN``,
``Infinity``, ``1e400``) or a string with a lone surrogate (``"\ud800"`` as JSON escapes it).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from confroute.serving.openai_format import error_body

__all__ = ["MAX_JSON_DEPTH", "check_json_tree", "read_json_body"]

MAX_JSON_DEPTH = 100
"""Deepest nesting of objects and arrays accepted in a request body."""


def _refusal(
    kind: type[web.HTTPClientError],
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> web.HTTPClientError:
    return kind(
        text=json.dumps(error_body(message, "invalid_request_error", param=param, code=code)),
        content_type="application/json",
    )


def _bad(message: str, param: str | None = None) -> web.HTTPClientError:
    return _refusal(web.HTTPBadRequest, message, param=param)


async def read_json_body(request: web.Request, timeout_s: float) -> Any:
    """The request's JSON body, read within ``timeout_s`` seconds and checked.

    Raises:
        web.HTTPRequestTimeout: The body did not arrive in time (the connection is closed).
        web.HTTPRequestEntityTooLarge: The body is larger than the app's ``client_max_size``.
        web.HTTPBadRequest: The body is not JSON, or fails :func:`check_json_tree`.
    """
    try:
        raw = await asyncio.wait_for(request.read(), timeout_s)
    except asyncio.TimeoutError:
        refusal = _refusal(
            web.HTTPRequestTimeout,
            f"The request body did not arrive within {timeout_s:g} s.",
            code="request_timeout",
        )
        refusal.headers["Connection"] = "close"
        raise refusal from None
    except web.HTTPRequestEntityTooLarge as error:
        message = f"The request body is larger than {request.client_max_size} bytes; send less."
        raise web.HTTPRequestEntityTooLarge(
            request.client_max_size,
            request.content_length or request.client_max_size + 1,
            text=json.dumps(error_body(message, "invalid_request_error", code="request_too_large")),
            content_type="application/json",
        ) from error
    try:
        body = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise _bad(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, a too-long integer
        raise _bad(f"The request body is not valid UTF-8 JSON: {error}.") from None
    check_json_tree(body)
    return body


def check_json_tree(body: Any) -> None:
    """Check a parsed JSON value: bounded depth, finite numbers, strings that are valid text.

    Iterative, so that the check itself cannot overflow the stack.

    Raises:
        web.HTTPBadRequest: Naming the first offending field (``messages[0].content``).
    """
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)) and depth > MAX_JSON_DEPTH:
            raise _bad(
                f"The request body is nested deeper than {MAX_JSON_DEPTH} levels at "
                f"{path or 'the top'}.",
                path or None,
            )
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                where = f"{path}.{key}" if path else str(key)
                _check_text(key, where)
                stack.append((item, where, depth + 1))
        elif isinstance(value, list):
            for index in reversed(range(len(value))):
                stack.append((value[index], f"{path}[{index}]", depth + 1))
        elif isinstance(value, float) and not math.isfinite(value):
            field = path or "the body"
            raise _bad(f"'{field}' must be a finite number, got {value}.", path or None)
        elif isinstance(value, str):
            _check_text(value, path)


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        field = path or "the body"
        raise _bad(
            f"'{field}' holds a lone UTF-16 surrogate (such as \\ud800), which is not text; "
            "send each surrogate with its pair, or valid UTF-8.",
            path or None,
        ) from None
