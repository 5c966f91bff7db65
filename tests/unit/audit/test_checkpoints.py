"""Signed checkpoints: with the public key, forged chains, forged seals, cut tails and tampered or removed
checkpoints fail `audit verify`; an untouched signed stream passes, sealed."""

import asyncio
import hashlib
import itertools
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from extauth.audit.chain import GENESIS, verify
from extauth.audit.cli import run_verify
from extauth.audit.signing import CheckpointSigner, Verifier, load_public_key, load_signing_key, write_key_pair
from extauth.audit.writer import AuditWriter
from extauth.cli import main
from extauth.config import ConfigError
from extauth.config.schema import AuditConfig

EVERY = 4


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def verifier(keys: tuple[Path, Path]) -> Verifier:
    return Verifier.of([load_public_key(keys[1])])


def signer_for(keys: tuple[Path, Path], every_events: int = EVERY, every_seconds: float = 3600) -> CheckpointSigner:
    return CheckpointSigner(load_signing_key(keys[0]), every_events, every_seconds)


def deny(index: int) -> dict[str, object]:
    return {"event": "decision", "request_id": f"r{index}", "decision": "deny", "status": 403, "reason": "forbidden"}


def signed_stream(path: Path, signer: CheckpointSigner, events: int = 10) -> list[str]:
    """A real stream from the real writer with a signing key: started, `events` decisions, closed."""
    async def write() -> None:
        writer = AuditWriter.open(path, "test/0", linger_seconds=0, signer=signer)
        await writer.start()
        for index in range(events):
            writer.emit(deny(index))
            await asyncio.sleep(0)  # one event per batch, so the count cadence is what places checkpoints
        await writer.close()
    asyncio.run(write())
    return path.read_text().splitlines(keepends=True)


@pytest.fixture
def lines(tmp_path: Path, keys: tuple[Path, Path]) -> list[str]:
    return signed_stream(tmp_path / "audit.jsonl", signer_for(keys))


def parsed(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines]


def rechain(events: list[dict[str, object]]) -> list[str]:
    """What a forger without the private key can do: renumber and rehash every line of every chain, keeping
    whatever signatures the lines carry."""
    seqs: dict[object, int] = {}
    heads: dict[object, str] = {}
    out = []
    for original in events:
        event = {name: value for name, value in original.items() if name != "hash"}
        chain = event["chain"]
        seqs[chain] = seqs.get(chain, 0) + 1
        event["seq"], event["prev_hash"] = seqs[chain], heads.get(chain, GENESIS)
        body = json.dumps(event, separators=(",", ":"))
        heads[chain] = hashlib.sha256(body.encode()).hexdigest()
        out.append(f'{body[:-1]},"hash":"{heads[chain]}"}}\n')
    return out


def kinds(lines: list[str]) -> list[str]:
    return [str(event["event"]) for event in parsed(lines)]


def test_signed_stream_verifies_sealed_with_checkpoints_after_start_and_every_n_lines(
        lines: list[str], verifier: Verifier) -> None:
    """A checkpoint follows audit_started, then one every EVERY lines; audit_closed is signed: all verify."""
    assert kinds(lines) == (["audit_started", "decision", "audit_checkpoint"]
                            + (["decision"] * EVERY + ["audit_checkpoint"]) * 2 + ["decision", "audit_closed"])
    report = verify(lines, verifier)
    assert report.ok(require_sealed=True) and report.problems == []
    assert report.chains[parsed(lines)[0]["chain"]].checkpoints == 4


def test_rechain_reproduces_an_untouched_stream(lines: list[str]) -> None:
    """The forger's tool is faithful: re-chaining an unmodified stream yields the same bytes (so the forgery
    tests below fail for the forgery, not for a broken helper)."""
    assert rechain(parsed(lines)) == lines


def test_truncated_sealed_chain_fails_when_a_seal_is_required(tmp_path: Path, lines: list[str],
                                                              verifier: Verifier) -> None:
    """Cutting the last lines of a closed chain leaves an unsealed tail: --require-sealed fails, naming it."""
    cut = lines[:-3]
    report = verify(cut, verifier)
    assert report.problems == [] and not report.ok(require_sealed=True)
    path = tmp_path / "cut.jsonl"
    path.write_text("".join(cut))
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        assert run_verify([str(path)], True, sink, [next(iter(verifier.keys.values()))]) == 1
    tail = len(cut) - 1 - max(index for index, kind in enumerate(kinds(cut)) if kind == "audit_checkpoint")
    assert tail > 0 and f"unsealed tail of {tail} events" in out.read_text()
    assert "UNSEALED chain test/0/" in out.read_text()


def test_truncated_chain_with_a_forged_seal_fails_only_with_the_key(lines: list[str], verifier: Verifier) -> None:
    """Cut the tail and append a new audit_closed with recomputed hashes: the bare chain accepts it as sealed;
    with the public key the forged seal is reported (it carries no valid signature)."""
    events = parsed(lines)
    forged_seal = {name: value for name, value in events[-1].items() if name != "signature"}
    forged = rechain([*events[:-4], forged_seal])
    assert verify(forged).ok(require_sealed=True)
    report = verify(forged, verifier)
    assert len(report.problems) == 1 and "audit_closed" in report.problems[0]
    assert "is not signed" in report.problems[0] and not report.ok()


def test_open_chain_reports_its_unsealed_tail(tmp_path: Path, keys: tuple[Path, Path], verifier: Verifier) -> None:
    """A running writer's file verifies (its newest lines after the last checkpoint are an unsealed tail), and
    fails only when a seal is required."""
    path = tmp_path / "open.jsonl"

    async def write_without_closing() -> list[str]:
        writer = AuditWriter.open(path, "test/0", linger_seconds=0, signer=signer_for(keys))
        await writer.start()
        for index in range(1 + EVERY + 2):
            writer.emit(deny(index))
            await asyncio.sleep(0)
        # started, r0, checkpoint, EVERY decisions, checkpoint, then the 2 decisions of the open tail
        while len(text := path.read_text().splitlines(keepends=True)) < 3 + EVERY + 1 + 2:
            await asyncio.sleep(0.01)
        await writer.close()
        return text
    text = asyncio.run(write_without_closing())
    report = verify(text, verifier)
    (state,) = report.chains.values()
    assert report.ok() and not report.ok(require_sealed=True)
    assert state.unsigned_tail == 2 and "unsealed tail of 2 events" in state.describe_unsealed(signed=True)


@pytest.mark.parametrize("forgery", ["edited_and_rehashed", "checkpoints_dropped", "written_from_scratch"])
def test_forged_chain_with_recomputed_hashes_fails_with_the_key(lines: list[str], verifier: Verifier,
                                                                forgery: str) -> None:
    """A chain whose hashes were all recomputed passes the bare hash check but not the signature check, however
    it was forged: a decision edited, the checkpoints removed, or every line invented."""
    events = parsed(lines)
    if forgery == "edited_and_rehashed":
        events[3]["decision"] = "allow"
    elif forgery == "checkpoints_dropped":
        events = [event for event in events if event["event"] not in ("audit_checkpoint", "audit_closed")]
    else:
        events = [{**deny(index), "chain": "host/0/forged", "seq": 0, "prev_hash": ""} for index in range(5)]
    forged = rechain(events)
    assert verify(forged).ok()
    report = verify(forged, verifier)
    assert not report.ok() and report.problems


def test_tampered_checkpoint_signature_fails(lines: list[str], verifier: Verifier) -> None:
    """A checkpoint whose signature was altered (and every hash recomputed after it) is reported, and so is every
    later signed line, since each signs over the chain that now includes the altered line."""
    events = parsed(lines)
    signed_lines = [index for index, event in enumerate(events) if "signature" in event]
    signature = str(events[2]["signature"])
    events[2]["signature"] = ("B" if signature[0] == "A" else "A") + signature[1:]
    report = verify(rechain(events), verifier)
    assert report.problems[0].startswith("line 3: audit_checkpoint") and "does not verify" in report.problems[0]
    assert [problem.split(":")[0] for problem in report.problems[:-1]] == [f"line {i + 1}" for i in signed_lines]


def test_removed_checkpoint_line_breaks_the_chain(lines: list[str], verifier: Verifier) -> None:
    """Deleting a checkpoint line leaves a seq gap, with or without the key."""
    checkpoint_index = kinds(lines).index("audit_checkpoint", 3)
    removed = lines[:checkpoint_index] + lines[checkpoint_index + 1:]
    for report in (verify(removed), verify(removed, verifier)):
        assert any("missing before it" in problem for problem in report.problems)


def test_wrong_public_key_fails_and_rotation_accepts_either_key(lines: list[str], verifier: Verifier) -> None:
    """Verifying with an unrelated key names the signing key; given both old and new keys, it verifies."""
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    report = verify(lines, Verifier.of([other]))
    assert not report.ok() and all("not by any of the given public keys" in problem or "no validly signed"
                                   in problem for problem in report.problems)
    assert verify(lines, Verifier.of([other, *verifier.keys.values()])).ok(require_sealed=True)


def test_unsigned_stream_fails_when_a_key_is_given(tmp_path: Path, verifier: Verifier) -> None:
    """A stream written without a signing key cannot pass as signed."""
    async def write() -> None:
        writer = AuditWriter.open(tmp_path / "plain.jsonl", "test/0", linger_seconds=0)
        await writer.start()
        writer.emit(deny(0))
        await writer.close()
    asyncio.run(write())
    lines = (tmp_path / "plain.jsonl").read_text().splitlines(keepends=True)
    assert verify(lines).ok(require_sealed=True)
    report = verify(lines, verifier)
    assert not report.ok() and any("no validly signed checkpoint" in problem for problem in report.problems)


def test_idle_writer_signs_its_last_lines_after_checkpoint_every_seconds(
        tmp_path: Path, keys: tuple[Path, Path], verifier: Verifier) -> None:
    """Lines written while the count is not reached get a checkpoint once the time cadence passes, without any
    further event arriving."""
    path = tmp_path / "idle.jsonl"

    async def write() -> list[str]:
        writer = AuditWriter.open(path, "test/0", linger_seconds=0, signer=signer_for(keys, 1000, 0.05))
        await writer.start()
        await asyncio.sleep(0.05)
        writer.emit(deny(1))
        for _ in range(500):
            await asyncio.sleep(0.01)
            text = path.read_text().splitlines(keepends=True)
            if kinds(text)[-1] == "audit_checkpoint" and "decision" in kinds(text):
                break
        await writer.close()
        return text
    text = asyncio.run(write())
    assert kinds(text)[-2:] == ["decision", "audit_checkpoint"]
    assert verify(text, verifier).chains[parsed(text)[0]["chain"]].unsigned_tail == 0


def write_stream(path: Path, lines: list[str]) -> str:
    path.write_text("".join(lines))
    return str(path)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_verify_options_work_before_and_after_the_file(tmp_path: Path, lines: list[str], keys: tuple[Path, Path],
                                                       order: tuple[int, ...],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`audit verify` takes --require-sealed, --public-key and FILE in any order, with the same verdicts."""
    sealed = write_stream(tmp_path / "sealed.jsonl", lines)
    cut = write_stream(tmp_path / "cut.jsonl", lines[:-1])
    for file, expected in ((sealed, 0), (cut, 1)):
        groups = [["--require-sealed"], ["--public-key", str(keys[1])], [file]]
        argv = ["audit", "verify", *itertools.chain.from_iterable(groups[index] for index in order)]
        assert main(argv) == expected, argv
    out = capsys.readouterr().out
    assert "signed checkpoint(s) verified" in out and "UNSEALED" in out


def test_keygen_writes_a_private_key_only_its_owner_reads_and_keeps_an_existing_pair(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit keygen DIR` creates a usable pair (private key 0600) and refuses to replace it without --force."""
    assert main(["audit", "keygen", str(tmp_path)]) == 0
    private, public = tmp_path / "audit-signing.key", tmp_path / "audit-signing.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert load_signing_key(private).public_key() == load_public_key(public)
    before = private.read_bytes()
    assert main(["audit", "keygen", str(tmp_path)]) == 2 and private.read_bytes() == before
    assert main(["audit", "keygen", "--force", str(tmp_path)]) == 0 and private.read_bytes() != before
    assert "audit.signing_key" in capsys.readouterr().out


def test_a_key_that_cannot_sign_stops_the_start_naming_the_field(tmp_path: Path) -> None:
    """A missing key, or a key of another type, is a ConfigError naming audit.signing_key, not an unsigned run."""
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for path, message in ((rsa_key, "not an Ed25519 private key"), (tmp_path / "absent.key", "cannot read")):
        with pytest.raises(ConfigError) as error:
            CheckpointSigner.from_config(AuditConfig(signing_key=path))
        assert "audit.signing_key" in str(error.value) and message in str(error.value)
    assert CheckpointSigner.from_config(AuditConfig()) is None


def test_public_key_option_accepts_the_private_key_file(tmp_path: Path, lines: list[str],
                                                        keys: tuple[Path, Path]) -> None:
    """On the signing host, the private key file can stand in for the public key."""
    path = write_stream(tmp_path / "a.jsonl", lines)
    assert run_verify([path], True, sys.stdout, [load_public_key(keys[0])]) == 0
