"""`extauth token` finds the local stack's signing key from any directory ($EXTAUTH_DEV_KEY, else the checkout's
.run/certs), and says in one line what to do when there is none; `dev-upstream` finds its certificates alike."""

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from extauth.cli import main
from extauth.devtools import DEV_AUDIENCE, DEV_KEY_ID, DEV_KEY_VARIABLE
from extauth.devtools.certs import DevCerts, create_dev_certs


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout whose `make run` has created .run/certs."""
    root = tmp_path_factory.mktemp("checkout")
    create_dev_certs(root / ".run" / "certs")
    return root


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkout: Path) -> Path:
    """Run from a directory that is not the checkout, with the package living in `checkout`."""
    monkeypatch.setattr("extauth.devstack.stack.REPO_ROOT", checkout)
    monkeypatch.delenv(DEV_KEY_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def minted_subject(capsys: pytest.CaptureFixture[str], certs: DevCerts) -> str:
    token = capsys.readouterr().out.strip()
    key = jwt.PyJWKSet.from_json(certs.jwks.read_text())[DEV_KEY_ID]
    return str(jwt.decode(token, key, algorithms=["RS256"], audience=DEV_AUDIENCE)["sub"])


def test_token_uses_the_checkouts_key_from_any_directory(
        elsewhere: Path, checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --key or the variable, the key `make run` created in the package's checkout signs the token."""
    assert main(["token", "--sub", "alice"]) == 0
    assert minted_subject(capsys, DevCerts.in_directory(checkout / ".run" / "certs")) == "alice"


def test_the_variable_names_another_key(elsewhere: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """$EXTAUTH_DEV_KEY wins over the checkout's key, and --key over both."""
    other = create_dev_certs(elsewhere / "other")
    monkeypatch.setenv(DEV_KEY_VARIABLE, str(other.jwt_signing_key))
    assert main(["token", "--sub", "bob"]) == 0
    assert minted_subject(capsys, other) == "bob"
    monkeypatch.setenv(DEV_KEY_VARIABLE, str(elsewhere / "nowhere.key"))
    assert main(["token", "--sub", "carol", "--key", str(other.jwt_signing_key)]) == 0
    assert minted_subject(capsys, other) == "carol"


def test_no_key_is_one_line_saying_what_to_do(elsewhere: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """No key anywhere: exit 2 and one line naming where it looked and the ways out."""
    monkeypatch.setattr("extauth.devstack.stack.REPO_ROOT", elsewhere)
    assert main(["token", "--sub", "alice"]) == 2
    assert capsys.readouterr().err == (
        f"extauth token: error: no dev signing key at {elsewhere / '.run' / 'certs' / 'jwt-signing.key'}; "
        f"run `make run` once, set {DEV_KEY_VARIABLE} or pass --key\n")
    monkeypatch.setenv(DEV_KEY_VARIABLE, str(elsewhere / "gone.key"))
    assert main(["token", "--sub", "alice"]) == 2
    assert f"no dev signing key at {elsewhere / 'gone.key'} (from ${DEV_KEY_VARIABLE})" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"not a key at all\n", b"\x00\xff" * 40, "ec"], ids=["text", "binary", "ec key"])
def test_a_key_file_that_is_not_an_rsa_key_is_named_in_one_line(
        elsewhere: Path, content: bytes | str, capsys: pytest.CaptureFixture[str]) -> None:
    """Garbage, binary or a non-RSA key: exit 2 and one line naming the file."""
    key = elsewhere / "bad.key"
    key.write_bytes(content if isinstance(content, bytes) else ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert main(["token", "--sub", "alice", "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"extauth token: error: {key}: not a") and err.count("\n") == 1


def test_dev_upstream_looks_for_its_certificates_in_the_checkout_too(
        elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`dev-upstream` without --certs uses the checkout's .run/certs, not the working directory's, and names
    those files in one line when they are missing."""
    monkeypatch.setattr("extauth.devstack.stack.REPO_ROOT", elsewhere / "checkout")
    (elsewhere / ".run" / "certs").mkdir(parents=True)  # a working directory's own .run is not used
    assert main(["dev-upstream", "--port", "0"]) == 2
    certs = elsewhere / "checkout" / ".run" / "certs"
    assert capsys.readouterr().err == (f"extauth dev-upstream: error: {certs / 'upstream.crt'} / "
                                       f"{certs / 'upstream.key'}: No such file or directory\n")
