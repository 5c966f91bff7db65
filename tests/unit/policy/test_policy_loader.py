"""Which files are policy, how documents are dispatched on `kind`, and what the version covers."""

import re
from pathlib import Path

import pytest

from extauth.config import ConfigError
from extauth.documents.loader import load_policies
from extauth.documents.policy import PolicyDocument
from extauth.documents.screening import ScreeningDocument

POLICY = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: shop}\nroutes:\n  - {name: r, public: true}\n"
SCREENING = "apiVersion: extauth/v1\nkind: Screening\nmetadata: {name: strict}\nmethods: [GET]\n"


def test_documents_are_dispatched_on_kind(tmp_path: Path) -> None:
    """Policy and Screening documents, even in one file, land in their own part of the PolicySet."""
    (tmp_path / "all.yaml").write_text(POLICY + "---\n" + SCREENING)
    policies = load_policies(tmp_path)
    assert [type(loaded.document) for loaded in policies.documents] == [PolicyDocument]
    assert [type(loaded.document) for loaded in policies.screening] == [ScreeningDocument]
    assert policies.screening[0].document.methods == ["GET"]
    assert policies.screening[0].issue(("methods",), "methods", "m").line == 10  # lines count from the top of the file


def test_only_top_level_yaml_files_are_policy(tmp_path: Path) -> None:
    """Policy test cases in `tests/` and other files are neither loaded nor part of the version."""
    (tmp_path / "shop.yml").write_text(POLICY)
    (tmp_path / "README.md").write_text("not yaml")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "shop.yaml").write_text("kind: PolicyTest\ncases: []\n")
    version = load_policies(tmp_path).version
    (tmp_path / "tests" / "shop.yaml").write_text("kind: PolicyTest\ncases: [changed]\n")
    assert load_policies(tmp_path).version == version
    assert [loaded.file.name for loaded in load_policies(tmp_path).documents] == ["shop.yml"]


def test_version_covers_screening_documents(tmp_path: Path) -> None:
    """Editing a screening file changes the policy version recorded with every decision."""
    (tmp_path / "a.yaml").write_text(POLICY)
    (tmp_path / "b.yaml").write_text(SCREENING)
    version = load_policies(tmp_path).version
    (tmp_path / "b.yaml").write_text(SCREENING.replace("[GET]", "[GET, POST]"))
    assert load_policies(tmp_path).version != version


def test_an_unlistable_policy_directory_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory that cannot be listed (permissions, a vanished mount) is a ConfigError naming it, not an OSError."""
    def denied(self: Path) -> None:
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot list: Permission denied$"):
        load_policies(tmp_path)
