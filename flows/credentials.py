"""The flows' side of credentials by reference (``shiftover.credentials``): Prefect Secret blocks
as a reference scheme, and the check every flow makes on its ``control_url`` before using it.

A flow-run parameter is served to anyone who can read the Prefect API and shown in the UI, so
``control_url`` must be a reference or a URL without a password; the flow resolves it only when it
connects.
"""

from __future__ import annotations

from uuid import UUID

from shiftover.connect import redact
from shiftover.credentials import ENV_REFERENCE, refuse_inline_password, register_resolver
from shiftover.errors import CredentialError

BLOCK_TYPES = ("secret",)


def resolve_block(name: str) -> str:
    """``block:secret/<name>`` (or ``block:<name>``): the value of a Prefect Secret block."""
    from prefect.blocks.system import Secret

    kind, sep, block = name.partition("/")
    if not sep:
        kind, block = "secret", name
    if kind not in BLOCK_TYPES or not block:
        raise CredentialError(f"block:{name}", "only Secret blocks are supported: write 'block:secret/<name>'")
    try:
        value = Secret.load(block).get()  # type: ignore[union-attr]
    except ValueError as exc:  # Prefect's "Unable to find block document named ..." (names, no values)
        raise CredentialError(f"block:{name}", f"cannot load the Secret block: {exc}") from None
    if not isinstance(value, str):
        raise CredentialError(f"block:{name}", "the Secret block holds structured data, not a URL string")
    return value.strip()


def register_block_resolver() -> None:
    """Let ``block:`` references resolve in this process (idempotent)."""
    register_resolver("block", resolve_block)


def admit_control_url(control_url: str) -> None:
    """At a flow's edge: refuse a ``control_url`` with an inline password, and make block
    references resolvable for this run.

    Prefect stored the parameters before the flow began, so a refused run also overwrites its own
    ``control_url`` parameter with the password hidden (best effort: the refusal stands either way)."""
    try:
        refuse_inline_password(
            "control_url", control_url, "the flow run's parameters (served by the Prefect API and shown in its UI)"
        )
        refuse_embedded_reference("control_url", control_url)
    except CredentialError:
        scrub_parameter("control_url", redact(control_url))
        raise
    register_block_resolver()


def refuse_embedded_reference(field: str, value: str) -> None:
    """A parameter may be one whole ``${NAME}`` reference, but not a URL with one inside: whoever can
    set a run's parameters (anyone reaching the Prefect API) could otherwise write
    ``postgresql://x:${ANY_SECRET}@their-host/db`` and have the worker send any variable of its
    environment to a server they name. (Specs are files on the worker; they keep substitution.)"""
    if ENV_REFERENCE.search(value) and not ENV_REFERENCE.fullmatch(value):
        raise CredentialError(
            field,
            "a ${NAME} reference inside a flow parameter is refused: anyone who can set a run's parameters "
            "could have the worker send any environment variable to a server they name. Give the whole URL "
            "as one reference (${NAME}, file:PATH or block:secret/NAME)",
        )


def scrub_parameter(name: str, shown: str) -> None:
    """Replace this flow run's parameter ``name`` with ``shown`` on the Prefect server."""
    from prefect import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return
    parameters = {**flow_run.get_parameters(), name: shown}
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(run_id), parameters=parameters)
    except Exception:
        return
