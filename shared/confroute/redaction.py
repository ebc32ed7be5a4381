"""Secrets beyond the key: a base URL whose userinfo is secret, and masking secrets in text.

A key can ride in a base URL's userinfo (``http://user:sk-...@host/v1``); the HTTP client then
sends it as an ``Authorization: Basic`` header, and a provider's error may quote that header.
:class:`SecretURL` keeps such a URL a secret until the call is made, and :func:`mask_secret`
takes the userinfo, the password and the ``Basic`` credential (and any key) out of a text.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

from pydantic import GetCoreSchemaHandler, SecretStr
from pydantic_core import core_schema

__all__ = ["MASK", "SecretURL", "mask_secret", "secret_texts"]

MASK = "**********"
"""What a secret is replaced with in messages and reports."""

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)?(?P<userinfo>[^/?#]*)@")
"""The ``user:password@`` part of a URL (up to the last ``@`` before the path)."""


class SecretURL(SecretStr):
    """A URL whose userinfo (``http://user:password@host/...``) is a secret.

    A key can ride in a base URL's userinfo (the HTTP client then sends it as a ``Basic``
    header). Like :class:`~pydantic.SecretStr`, the URL itself is read only with
    :meth:`get_secret_value`, when the call is made; its ``str``, ``repr`` and JSON form show it
    with the userinfo masked, ``http://***@host/...`` (a URL without userinfo shows as is).
    Pydantic fields of this type accept a string, a :class:`~pydantic.SecretStr` or a
    :class:`SecretURL`.

    Example:
        >>> url = SecretURL("http://u:sk-SECRET@127.0.0.1:9/v1")
        >>> str(url), repr(url)
        ('http://***@127.0.0.1:9/v1', "SecretURL('http://***@127.0.0.1:9/v1')")
    """

    def _display(self) -> str:
        """The URL with its userinfo masked."""
        return _USERINFO.sub(r"\g<scheme>***@", self.get_secret_value(), count=1)

    def secret_parts(self) -> tuple[str, ...]:
        """What no text may show: the userinfo, the password and the ``Basic`` credential.

        Each as written and percent-decoded, and the base64 ``user:password`` that the HTTP
        client sends in the ``Authorization: Basic`` header; longest first, so a longer part
        is masked before a part of it. Empty when the URL has no userinfo.
        """
        found = _USERINFO.match(self.get_secret_value())
        if found is None or not found["userinfo"]:
            return ()
        userinfo = found["userinfo"]
        user, _, password = userinfo.partition(":")
        parts = {userinfo, unquote(userinfo), password, unquote(password)}
        for pair in (f"{user}:{password}", f"{unquote(user)}:{unquote(password)}"):
            parts.add(base64.b64encode(pair.encode()).decode())
        return tuple(sorted((p for p in parts if p), key=len, reverse=True))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate from a string (or a secret holding one); dump as the masked URL in JSON."""
        from_text = core_schema.no_info_after_validator_function(cls, core_schema.str_schema())
        return core_schema.json_or_python_schema(
            python_schema=core_schema.union_schema(
                [
                    core_schema.is_instance_schema(cls),
                    core_schema.no_info_before_validator_function(_unwrap_secret, from_text),
                ]
            ),
            json_schema=from_text,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_url, info_arg=True, when_used="unless-none"
            ),
        )


def secret_texts(*secrets: SecretStr | None) -> tuple[str, ...]:
    """The strings to mask in any text for ``secrets``, longest first.

    A :class:`SecretURL` gives its :meth:`~SecretURL.secret_parts` (not the whole URL, whose
    host is no secret); any other secret its value. None and empty values give nothing.
    """
    found: set[str] = set()
    for secret in secrets:
        if isinstance(secret, SecretURL):
            found.update(secret.secret_parts())
        elif secret is not None and secret.get_secret_value():
            found.add(secret.get_secret_value())
    return tuple(sorted(found, key=len, reverse=True))


def _unwrap_secret(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _serialize_url(value: SecretURL, info: core_schema.SerializationInfo) -> str | SecretURL:
    return str(value) if info.mode == "json" else value


def mask_secret(text: str, *secrets: SecretStr | None) -> str:
    """``text`` with each secret (a URL's userinfo: :func:`secret_texts`) replaced by :data:`MASK`.

    Example:
        >>> mask_secret("401: Basic dTpzay1TRUNSRVQ=", SecretURL("http://u:sk-SECRET@h/v1"))
        '401: Basic **********'
    """
    for value in secret_texts(*secrets):
        text = text.replace(value, MASK)
    return text
