"""The API token file and api.token are refused loudly when unsafe or unusable (issue 15).

Before: the file was read whatever its mode or owner, an empty file gave the token "" (every
request then got 401, with nothing in the log), and any length was accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.config import TOKEN_MIN_LENGTH, ConfigError, parse_config, read_or_create_token

GOOD = "k" * TOKEN_MIN_LENGTH
BASE = {
    "sync": {"source": "snmp://public@[2001:db8::1]"},
    "links": {"mode": "direct", "map": [{"router_if": "ge-0/0/0.0", "link": "eth1"}]},
}


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "api-token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_new_token_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    token = read_or_create_token(path)
    assert len(token) >= TOKEN_MIN_LENGTH and path.stat().st_mode & 0o777 == 0o600
    assert read_or_create_token(path) == token
    # the lab's shorter generated token still meets the minimum
    assert len(read_or_create_token(tmp_path / "lab-token", nbytes=24)) == TOKEN_MIN_LENGTH


@pytest.mark.parametrize(
    ("text", "mode", "needle"),
    [
        (GOOD, 0o640, "mode 0640: the group or others may read or write it"),
        (GOOD, 0o604, "mode 0604"),
        (GOOD, 0o602, "mode 0602"),
        (GOOD, 0o620, "mode 0620"),
        ("", 0o600, "is empty; remove the file and the engine generates a new token"),
        ("  \n", 0o600, "is empty"),
        ("s3cret-but-short", 0o600, f"is 16 characters long: must be at least {TOKEN_MIN_LENGTH}"),
        ("x" * (TOKEN_MIN_LENGTH - 1) + "\n", 0o600, f"is {TOKEN_MIN_LENGTH - 1} characters long"),
    ],
)
def test_unsafe_or_unusable_token_file_is_refused(tmp_path: Path, text: str, mode: int, needle: str) -> None:
    path = _file(tmp_path, text, mode)
    with pytest.raises(ConfigError) as info:
        read_or_create_token(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and needle in message, message
    if text.strip():
        assert text.strip() not in message  # the value is never repeated


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_token_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD)
    os.chown(path, 4242, 4242)
    with pytest.raises(ConfigError, match=r"owned by uid 4242, not by the engine's user \(uid 0\)"):
        read_or_create_token(path)


def test_token_file_symlink_is_not_followed(tmp_path: Path) -> None:
    target = _file(tmp_path, GOOD)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_or_create_token(link)


@pytest.mark.parametrize(
    ("api", "env", "needle"),
    [
        ({"token": "changeme"}, {}, "api.token: this value is 8 characters long: must be at least 32"),
        ({}, {"XCAST6_API_TOKEN": "changeme"}, "api.token (from $XCAST6_API_TOKEN): this value is 8 char"),
        ({"token": GOOD}, {"XCAST6_API_TOKEN": "changeme"}, "from $XCAST6_API_TOKEN"),
    ],
)
def test_short_configured_token_is_a_config_problem(api: dict, env: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "api": api}, env=env)
    assert needle in str(info.value) and "changeme" not in str(info.value)


def test_long_enough_configured_token_is_accepted() -> None:
    cfg = parse_config({**BASE, "api": {"token": "short-in-file"}}, env={"XCAST6_API_TOKEN": GOOD})
    assert cfg.api.token is not None and cfg.api.token.reveal() == GOOD


def test_daemon_does_not_start_with_a_bad_token_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _file(state, GOOD, 0o644)
    config = tmp_path / "engine.toml"
    config.write_text(
        f'[engine]\nstate_dir = "{state}"\n[sync]\nsource = "snmp://public@[2001:db8::1]"\n'
        '[links]\nmode = "direct"\n[[links.map]]\nrouter_if = "ge-0/0/0.0"\nlink = "eth1"\n'
        "[workers]\ncount = 0\n[api]\nport = 1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCAST6_")}
    res = subprocess.run(
        [sys.executable, "-m", "api.main", "run", "--config", str(config)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{state / 'api-token'}: API token file has mode 0644" in res.stderr, res.stderr
    # refused before anything started: the configuration line, then the refusal, nothing else
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "xcast6.daemon: configuration" in lines[0], res.stderr
