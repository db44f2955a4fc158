"""Signed approvals: an approver's Ed25519 key signs exactly what they approve.

The spec lists each approver's public key (``approvals.keys``); the approver keeps the private key
on their own machine (``shiftover keygen``). A signature covers the canonical text of one question
and its answer: the migration, the step, the epoch and attempt of the request, the decision and the
approver's name (``approval_message``). So a signature cannot be replayed for another migration,
step, later state (a rollback or a lease take-over moves the epoch), a re-asked question (a refused
answer moves the attempt), the opposite decision, or another approver. The reason is free text
and is not signed: it is recorded as submitted.

Pure functions, no Prefect: the flow verifies, the CLI signs, the spec parses keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shiftover.errors import SignatureError

KEY_PREFIX = "ed25519:"
MESSAGE_VERSION = "shiftover-approval/v1"
DECISIONS = ("approve", "reject")
DEFAULT_KEY_DIR = Path("~/.config/shiftover/approvers")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"  # an approver's name is also a file name
SIGNATURE_PATTERN = r"^\s*[A-Za-z0-9+/]{86}==\s*$"  # 64 bytes in standard base64


@dataclass(frozen=True)
class Challenge:
    """The question an approval answers: which migration, step, and which asking of it."""

    migration: str
    step: str
    epoch: int
    attempt: int

    def message(self, decision: str, approver: str) -> bytes:
        return approval_message(self, decision, approver)

    def sign_command(self, approver: str = "NAME") -> str:
        """The command that prints the signature for this question (add ``--reject`` to reject)."""
        return (
            f"shiftover sign --approver {approver} --migration {self.migration} --step {self.step} "
            f"--epoch {self.epoch} --attempt {self.attempt}"
        )


def approval_message(challenge: Challenge, decision: str, approver: str) -> bytes:
    """The canonical bytes an approver signs: one ``field=value`` per line, in a fixed order."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    fields = {
        "migration": challenge.migration,
        "step": challenge.step,
        "epoch": str(int(challenge.epoch)),
        "attempt": str(int(challenge.attempt)),
        "decision": decision,
        "approver": approver,
    }
    for field, value in fields.items():
        if not value or value != value.strip() or any(c in value for c in "\n\r="):
            raise ValueError(f"{field} {value!r} cannot be signed (empty, padded, or holds a newline or '=')")
    return "\n".join([MESSAGE_VERSION, *(f"{k}={v}" for k, v in fields.items())]).encode()


def generate_key() -> tuple[bytes, str]:
    """A new private key (PKCS#8 PEM, unencrypted: keep the file private) and its public key text."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_key_text(private.public_key())


def public_key_text(public: Ed25519PublicKey) -> str:
    """``ed25519:BASE64`` of the raw 32-byte key: the form the spec's ``approvals.keys`` holds."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """``ValueError`` naming what is wrong when ``text`` is not ``ed25519:`` + 32 bytes in base64."""
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a public key starts with {KEY_PREFIX!r} (as `shiftover keygen` prints it)")
    try:
        raw = base64.b64decode(text.removeprefix(KEY_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a public key's text after 'ed25519:' must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(public_text: str) -> str:
    """``SHA256:`` + unpadded base64 of the raw key's digest (as OpenSSH prints fingerprints)."""
    raw = parse_public_key(public_text).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def sign_approval(private: Ed25519PrivateKey, challenge: Challenge, decision: str, approver: str) -> str:
    """The signature (standard base64) of ``approver``'s ``decision`` on ``challenge``."""
    return base64.b64encode(private.sign(approval_message(challenge, decision, approver))).decode()


def verify_approval(public_text: str, signature: str, challenge: Challenge, decision: str, approver: str) -> str:
    """The key's fingerprint when ``signature`` is ``approver``'s ``decision`` on ``challenge`` by
    the key ``public_text``; ``SignatureError`` otherwise (nothing tells which part differed:
    a signature for another step, epoch, attempt, decision, approver or key fails alike)."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error:
        raise SignatureError(approver, "the signature is not base64") from None
    try:
        parse_public_key(public_text).verify(raw, approval_message(challenge, decision, approver))
    except InvalidSignature:
        raise SignatureError(
            approver,
            f"the signature does not verify against {approver}'s key for {decision} of {challenge.step!r} "
            f"in {challenge.migration!r} at epoch {challenge.epoch}, attempt {challenge.attempt} "
            "(signed with another key, or for another migration, step, epoch, attempt or decision)",
        ) from None
    return fingerprint(public_text)


def key_file(key_dir: Path, approver: str) -> Path:
    """Where ``shiftover keygen`` keeps ``approver``'s private key."""
    return key_dir.expanduser() / f"{approver}.pem"


def write_private_key(path: Path, pem: bytes) -> None:
    """Write a new key file readable by its owner only (0600); ``FileExistsError`` rather than replace
    one (a replaced key would lock its approver out until the spec is updated)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)  # whatever the umask


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An approver's private key from its PEM file; ``SignatureError`` when it is not an Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(path.expanduser().read_bytes(), password=None)
    except FileNotFoundError:
        raise SignatureError(path.stem, f"no private key at {path} (create one with `shiftover keygen`)") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(path.stem, f"{path} is not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(path.stem, f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key
