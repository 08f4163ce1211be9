"""The config is validated at load: unknown keys, wrong types and secrets are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from csops.config import load_config
from csops.errors import ConfigError, ExitCode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "csops.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_and_paths_resolve_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[shop]\ntimezone = "Asia/Shanghai"\n'))
    assert cfg.shop.timezone == "Asia/Shanghai"
    assert cfg.db_path == (tmp_path / ".." / "data" / "csops.db").resolve()
    assert cfg.lock_dir == cfg.db_path.parent / ".csops-locks"


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("[shop]\nnmae = 'x'\n", "shop.nmae", "one of"),
        ("[shop]\ntimezone = 5\n", "shop.timezone", "a string"),
        ("[database]\nbusy_timeout_ms = 'soon'\n", "database.busy_timeout_ms", "an integer"),
        ("[database]\nsynchronous = 'OFF'\n", "database.synchronous", "'NORMAL' or 'FULL'"),
        ("[shop]\ntimezone = 'Mars/Olympus'\n", "shop", "IANA"),
        ("[nonsense]\na = 1\n", "nonsense", "one of"),
    ],
)
def test_bad_config_names_file_key_and_expectation(
    tmp_path: Path, text: str, field: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.exit_code == ExitCode.USAGE
    assert err.file == str(path)
    assert err.field == field
    assert expected in str(err)


def test_a_secret_written_in_the_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\npassword = 'hunter2hunter2'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "database.password"
    assert "password_env" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_invalid_toml_is_a_config_error_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[shop\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_lookup_order_flag_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", "[shop]\nname = 'cwd'\n")
    env_file = tmp_path / "env.toml"
    env_file.write_text("[shop]\nname = 'env'\n")
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text("[shop]\nname = 'flag'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CSOPS_CONFIG", raising=False)
    assert load_config().shop.name == "cwd"
    monkeypatch.setenv("CSOPS_CONFIG", str(env_file))
    assert load_config().shop.name == "env"
    assert load_config(flag_file).shop.name == "flag"


def test_missing_secret_env_var_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(tmp_path, ""))
    monkeypatch.delenv("CSOPS_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError) as info:
        cfg.secret("CSOPS_NO_SUCH_VAR", key="channels.mail.password_env")
    assert "CSOPS_NO_SUCH_VAR" in str(info.value)
