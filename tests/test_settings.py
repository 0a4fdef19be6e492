"""Settings: one dataclass, read from the environment once, flags override."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdemo.settings import ENV_VARS, PROJECT_ROOT, Settings


def test_defaults_keep_state_in_a_git_ignored_folder_inside_the_project():
    s = Settings.from_env({})
    assert s.home == (PROJECT_ROOT / ".mmdemo-home").resolve()
    assert ".mmdemo-home/" in (PROJECT_ROOT / ".gitignore").read_text()
    assert (s.base_model, s.host, s.port) == ("auto", "127.0.0.1", 7860)


def test_environment_is_read_and_flags_override(tmp_path: Path):
    env = {"MMDEMO_HOME": str(tmp_path), "MMDEMO_PORT": "9000", "MMDEMO_BASE_MODEL": "tiny"}
    s = Settings.from_env(env)
    assert (s.home, s.port, s.base_model) == (tmp_path.resolve(), 9000, "tiny")
    flagged = s.with_overrides(port=9100, home=str(tmp_path / "other"), host=None)
    assert flagged.port == 9100 and flagged.home == (tmp_path / "other").resolve()
    assert flagged.host == s.host


def test_bad_number_is_a_clear_error():
    with pytest.raises(ValueError, match="MMDEMO_PORT must be an integer"):
        Settings.from_env({"MMDEMO_PORT": "eighty"})


def test_every_setting_has_an_env_var_and_is_documented_in_the_readme():
    fields = {f for f in Settings.__dataclass_fields__}
    assert set(ENV_VARS.values()) == fields
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [name for name in ENV_VARS if name not in readme]
    assert not missing, f"README does not document {missing}"


def test_on_a_space_the_app_listens_on_every_interface():
    assert Settings.from_env({"SPACE_ID": "alice/mmdemo"}).host == "0.0.0.0"
    assert Settings.from_env({"SPACE_ID": "alice/mmdemo", "MMDEMO_HOST": "::"}).host == "::"


def test_bad_label_overlap_is_a_clear_error():
    with pytest.raises(ValueError, match="MMDEMO_LABEL_OVERLAP must be a number, got 'abc'"):
        Settings.from_env({"MMDEMO_LABEL_OVERLAP": "abc"})
    assert Settings.from_env({"MMDEMO_LABEL_OVERLAP": " "}).label_overlap == 0.0
    assert Settings.from_env({"MMDEMO_LABEL_OVERLAP": "2"}).label_overlap == 1.0
