"""A policy path that does not exist is a config error at the line that names it, not a bare missing file."""

from pathlib import Path

import pytest

from extauth.config import ConfigError, load_config

CONFIGS = {
    "path": "logging: {level: info}\npolicy:\n  path: missing/\n",
    "shadow_path": "policy:\n  path: live.yaml\n  shadow_path: missing/\n",
}


@pytest.mark.parametrize(("field", "text"), CONFIGS.items(), ids=CONFIGS.keys())
def test_missing_policy_path_names_the_config_file_line_and_field(tmp_path: Path, field: str, text: str) -> None:
    """`policy.path` or `policy.shadow_path` naming nothing fails at its line in the config, with the resolved path."""
    (tmp_path / "live.yaml").touch()
    config = tmp_path / "extauth.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"{config}:3: policy.{field}: {tmp_path / 'missing'} does not exist "
                                 "(a policy file, or a directory of *.yaml files)")


def test_existing_policy_directory_loads(tmp_path: Path) -> None:
    """A directory named relative to the config file is found there, whatever the working directory."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "extauth.yaml").write_text("policy: {path: policies/}\n")
    assert load_config(tmp_path / "extauth.yaml").policy.path == tmp_path / "policies"
