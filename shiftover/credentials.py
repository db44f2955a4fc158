"""Credentials by reference: a URL says where its secret lives, and is resolved only to connect.

A spec's ``source.url`` / ``target.url`` and the flows' ``control_url`` may be written as
references. The reference is what the spec file, the control store, flow-run parameters and
every message keep; the resolved URL lives only inside the engine made from it
(``shiftover.connect.get_engine``).

- ``${ORDERS_OLD_URL}``: an environment variable, as the whole value or inside it
  (``postgresql://app:${ORDERS_PG_PASSWORD}@db1/shop``); the value goes in as written, so
  characters such as ``@`` or ``/`` in a password must be percent-encoded;
- ``file:/run/secrets/orders-old-url``: a file's content, surrounding whitespace stripped;
- ``block:secret/orders-old-url``: a Prefect Secret block. This package never imports Prefect:
  the flows layer registers that resolver (``shiftover.flows.credentials``); until it does, a
  ``block:`` reference is refused with a message that says so.

A URL that holds a password inline is refused wherever Shiftover would store it
(``inline_password_problem``): the spec, and flow parameters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shiftover.errors import CredentialError

Resolver = Callable[[str], str]
"""Takes what follows ``scheme:`` and returns the secret; raises ``CredentialError`` naming the reference."""

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PASSWORD_QUERY_KEYS = frozenset({"password", "passwd"})
FIX = (
    "name it by reference instead: '${NAME}' (an environment variable holding the whole URL, or just the "
    "password as in 'postgresql://app:${PG_PASSWORD}@db/shop'), 'file:/path/to/secret' or "
    "'block:secret/<name>' (a Prefect Secret block)"
)


def read_secret_file(path: str) -> str:
    """``file:`` references: the file's content, stripped (``file:///abs`` is read as ``/abs``)."""
    if path.startswith("//"):
        path = path[2:]
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise CredentialError(f"file:{path}", f"cannot read the secret file: {exc.strerror}") from None


def _unregistered_block(name: str) -> str:
    raise CredentialError(
        f"block:{name}",
        "Prefect block references are resolved by Shiftover's flows and CLI (shiftover.flows.credentials."
        "register_block_resolver); this process has not registered that resolver",
    )


_resolvers: dict[str, Resolver] = {"file": read_secret_file, "block": _unregistered_block}


def register_resolver(scheme: str, resolver: Resolver) -> None:
    """Resolve ``scheme:...`` references with ``resolver`` from now on (replaces any earlier one)."""
    _resolvers[scheme] = resolver


def reference_scheme(value: str) -> str | None:
    """The registered scheme ``value`` is written in (``file``, ``block``), or None."""
    scheme, sep, _ = value.partition(":")
    return scheme if sep and scheme in _resolvers else None


def is_reference(value: str) -> bool:
    """Whether ``value`` names a secret instead of holding it (a scheme, or any ``${NAME}``)."""
    return reference_scheme(value) is not None or ENV_REFERENCE.search(value) is not None


def only_references(value: str) -> bool:
    """Whether ``value`` is nothing but ``${NAME}`` references (so showing it shows no secret)."""
    return bool(value) and ENV_REFERENCE.sub("", value) == ""


def resolve(value: str) -> str:
    """The secret ``value`` refers to; a plain value comes back unchanged. Call it only to connect."""
    scheme = reference_scheme(value)
    if scheme is not None:
        return _resolvers[scheme](value[len(scheme) + 1 :])
    return ENV_REFERENCE.sub(lambda match: _environment(match.group(1)), value)


def _environment(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise CredentialError(f"${{{name}}}", f"the environment variable {name} is not set in this process")
    return value


def inline_password_problem(url: str, kept_by: str) -> str | None:
    """Why ``url`` may not be kept as written (it holds a password that ``kept_by`` would keep), or None.

    A password made only of ``${NAME}`` references is no password; neither is an empty one."""
    if reference_scheme(url) is not None:
        return None
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # not a URL (a whole-value ${NAME}, or a typo that connecting will report)
    inline = bool(parsed.password) and not only_references(str(parsed.password))
    inline = inline or any(
        k.lower() in _PASSWORD_QUERY_KEYS and not only_references(str(v)) for k, v in parsed.query.items()
    )
    if not inline:
        return None
    return f"holds a password inline, and {kept_by} would keep it; {FIX}"


def refuse_inline_password(field: str, url: str, kept_by: str) -> None:
    """``CredentialError`` naming ``field`` when ``url`` holds a password inline."""
    problem = inline_password_problem(url, kept_by)
    if problem is not None:
        raise CredentialError(field, problem)
