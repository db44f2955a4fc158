"""Issue 16 §2, without a server: what an approval signature covers, keys in the spec, key files,
and the checks an answer goes through before it counts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shiftover.approvals import ROLLBACK_ANSWERER, ApprovalRequest, check_approval
from shiftover.cli import app
from shiftover.errors import ApprovalError, SignatureError, SpecError
from shiftover.plan.explain import explain
from shiftover.signing import (
    Challenge,
    approval_message,
    fingerprint,
    generate_key,
    load_private_key,
    parse_public_key,
    public_key_text,
    sign_approval,
    verify_approval,
    write_private_key,
)
from shiftover.spec import parse_spec, stored_form

CHALLENGE = Challenge("orders-v2", "switch_writes", 3, 0)


def new_key(tmp: Path, name: str) -> tuple[Path, str]:
    pem, public = generate_key()
    path = tmp / f"{name}.pem"
    write_private_key(path, pem)
    return path, public


def test_the_signed_text_names_every_bound_value_in_a_fixed_order() -> None:
    assert approval_message(CHALLENGE, "approve", "alice") == (
        b"shiftover-approval/v1\nmigration=orders-v2\nstep=switch_writes\nepoch=3\nattempt=0\n"
        b"decision=approve\napprover=alice"
    )
    for bad in ("al\nice", " alice", "a=b", ""):
        with pytest.raises(ValueError):
            approval_message(CHALLENGE, "approve", bad)
    with pytest.raises(ValueError):
        approval_message(CHALLENGE, "maybe", "alice")


def test_a_signature_verifies_only_for_what_was_signed(tmp_path: Path) -> None:
    alice_file, alice = new_key(tmp_path, "alice")
    _, bob = new_key(tmp_path, "bob")
    key = load_private_key(alice_file)
    signature = sign_approval(key, CHALLENGE, "approve", "alice")
    assert verify_approval(alice, signature, CHALLENGE, "approve", "alice") == fingerprint(alice)
    assert fingerprint(alice).startswith("SHA256:") and fingerprint(alice) != fingerprint(bob)
    others = [
        (bob, CHALLENGE, "approve", "alice"),  # another key
        (alice, Challenge("orders-v3", "switch_writes", 3, 0), "approve", "alice"),
        (alice, Challenge("orders-v2", "decommission", 3, 0), "approve", "alice"),
        (alice, Challenge("orders-v2", "switch_writes", 4, 0), "approve", "alice"),
        (alice, Challenge("orders-v2", "switch_writes", 3, 1), "approve", "alice"),
        (alice, CHALLENGE, "reject", "alice"),
    ]
    for public, challenge, decision, approver in others:
        with pytest.raises(SignatureError, match="does not verify"):
            verify_approval(public, signature, challenge, decision, approver)
    with pytest.raises(SignatureError, match="not base64"):
        verify_approval(alice, "not a signature!", CHALLENGE, "approve", "alice")
    assert public_key_text(parse_public_key(alice)) == alice


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    key_dir = tmp_path / "approvers"
    out = CliRunner().invoke(app, ["keygen", "alice", "--key-dir", str(key_dir)])
    assert out.exit_code == 0, out.output
    path = key_dir / "alice.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    line = out.stdout.strip().splitlines()[-1]
    name, _, quoted = line.partition(": ")
    public = quoted.strip('"')
    assert name == "alice" and public_key_text(load_private_key(path).public_key()) == public
    before = path.read_bytes()
    again = CliRunner().invoke(app, ["keygen", "alice", "--key-dir", str(key_dir)])
    assert again.exit_code == 2 and "never overwritten" in again.output
    assert path.read_bytes() == before
    bad = CliRunner().invoke(app, ["keygen", "../evil", "--key-dir", str(key_dir)])
    assert bad.exit_code == 2 and not (tmp_path / "evil.pem").exists()


def test_sign_prints_the_signature_the_flow_verifies(tmp_path: Path) -> None:
    key_dir = tmp_path / "approvers"
    CliRunner().invoke(app, ["keygen", "alice", "--key-dir", str(key_dir)])
    public = public_key_text(load_private_key(key_dir / "alice.pem").public_key())
    args = ["sign", "--approver", "alice", "--migration", "orders-v2", "--step", "switch_writes"]
    out = CliRunner().invoke(app, [*args, "--epoch", "3", "--attempt", "0", "--key-dir", str(key_dir)])
    assert out.exit_code == 0, out.output
    verify_approval(public, out.stdout.strip(), CHALLENGE, "approve", "alice")
    assert "signed an approval of switch_writes in orders-v2 at epoch 3, attempt 0, as alice" in out.stderr
    reject = CliRunner().invoke(app, [*args, "--epoch", "3", "--attempt", "0", "--reject", "--key-dir", str(key_dir)])
    verify_approval(public, reject.stdout.strip(), CHALLENGE, "reject", "alice")
    missing = CliRunner().invoke(app, [*args, "--epoch", "3", "--attempt", "0", "--key-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "shiftover keygen" in missing.output


def spec_with(approvals: dict) -> dict:  # type: ignore[type-arg]
    return {
        "name": "orders-v2",
        "source": {"url": "sqlite:///old.db", "table": "orders"},
        "target": {"url": "sqlite:///new.db", "table": "orders"},
        "key": ["id"],
        "approvals": approvals,
    }


def test_a_spec_with_keys_needs_one_for_every_listed_approver(tmp_path: Path) -> None:
    _, alice = new_key(tmp_path, "alice")
    spec = parse_spec(spec_with({"approvers": ["alice"], "keys": {"alice": alice}}))
    assert spec.approvals.public_keys == {"alice": alice}
    assert "Approvals by alice (each signed with their key" in explain(spec)
    assert stored_form(spec)["approvals"]["keys"] == {"alice": alice}  # the spec's own spelling
    with pytest.raises(SpecError, match=r"no key for approver\(s\) bob") as missing:
        parse_spec(spec_with({"approvers": ["alice", "bob"], "keys": {"alice": alice}}))
    assert missing.value.field == "approvals.keys"
    with pytest.raises(SpecError, match=r"not in approvals\.approvers") as extra:
        parse_spec(spec_with({"approvers": ["alice"], "keys": {"alice": alice, "mallory": alice}}))
    assert extra.value.field == "approvals.keys"
    with pytest.raises(SpecError, match="starts with 'ed25519:'"):
        parse_spec(spec_with({"approvers": ["alice"], "keys": {"alice": "ssh-ed25519 AAAA"}}))
    with pytest.raises(SpecError, match="keys need approvers"):
        parse_spec(spec_with({"keys": {"alice": alice}}))
    assert parse_spec(spec_with({"approvers": ["alice"]})).approvals.public_keys is None  # as before


class Answer:
    def __init__(self, approver: str, decision: str = "approve", signature: str = "") -> None:
        self.approver, self.decision, self.signature = approver, decision, signature
        self.confirm_name, self.reason = "orders-v2", "gates green"


def test_check_approval_with_keys(tmp_path: Path) -> None:
    alice_file, alice = new_key(tmp_path, "alice")
    bob_file, bob = new_key(tmp_path, "bob")
    keys, approvers = {"alice": alice, "bob": bob}, ("alice", "bob")
    request = ApprovalRequest(1, "orders-v2", "switch_writes", 3, "flow-run/x", "pending", attempt=0)

    def check(answer: Answer):  # type: ignore[no-untyped-def]
        return check_approval(answer, "orders-v2", approvers, "switch_writes", keys=keys, request=request)

    alice_key, bob_key = load_private_key(alice_file), load_private_key(bob_file)
    with pytest.raises(SignatureError, match="unsigned; sign it with: shiftover sign --approver alice"):
        check(Answer("alice"))
    with pytest.raises(SignatureError, match="does not verify"):
        check(Answer("alice", signature=sign_approval(bob_key, CHALLENGE, "approve", "alice")))
    with pytest.raises(SignatureError, match="does not verify"):
        check(Answer("alice", signature=sign_approval(alice_key, CHALLENGE, "reject", "alice")))
    with pytest.raises(SignatureError, match="no key in the spec for 'carol'"):
        check(Answer("carol", signature=sign_approval(alice_key, CHALLENGE, "approve", "carol")))
    with pytest.raises(SignatureError):  # an unsigned rejection by a person is not honoured either
        check(Answer("alice", decision="reject"))
    with pytest.raises(ApprovalError, match="rejected by rollback: ") as rollback:  # a rollback's rejection is
        check(Answer(ROLLBACK_ANSWERER, decision="reject"))
    assert not isinstance(rollback.value, SignatureError)
    with pytest.raises(SignatureError):  # ... but never its approval
        check(Answer(ROLLBACK_ANSWERER))
    with pytest.raises(ApprovalError, match=r"rejected by alice \(signature verified, key SHA256:") as signed:
        check(Answer("alice", decision="reject", signature=sign_approval(alice_key, CHALLENGE, "reject", "alice")))
    assert not isinstance(signed.value, SignatureError)
    record = check(Answer(" alice ", signature=sign_approval(alice_key, CHALLENGE, "approve", "alice")))
    assert record.approver == "alice" and record.key_fingerprint == fingerprint(alice)
    assert record.as_detail()["signature_verified"] is True
    unsigned_spec = check_approval(Answer("alice"), "orders-v2", approvers, "switch_writes")  # no keys: as before
    assert "signature_verified" not in unsigned_spec.as_detail()
