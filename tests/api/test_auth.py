"""Token roles (issue 20): the tokens file, the keyring, and every route of the app checked with
no token, a read token and an admin token, the routes enumerated from the app itself so a new
endpoint cannot be forgotten."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import Route

from api.app import create_app
from api.auth import (
    READ_METHODS,
    ApiToken,
    Keyring,
    Refusal,
    Role,
    allows,
    authorize,
    keyring_tokens,
    parse_tokens,
    read_tokens_file,
)
from api.config import ConfigError
from api.guard import OPEN_PATHS
from api.linkview import LinkView
from api.state import EngineView, StaticSync
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.model import Snapshot
from engine.settings import Secret

ADMIN = "a" * 20 + "dmin-token-0123456789"
READ = "r" * 20 + "ead-token-0123456789x"
ADMIN2 = "b" * 40
PROBLEM = "application/problem+json"


def _keyring() -> Keyring:
    return Keyring([ApiToken("ops", Role.ADMIN, Secret(ADMIN)),
                    ApiToken("prometheus", Role.READ, Secret(READ))])


def _app(keyring: Keyring) -> Any:
    fib = Fib()
    view = EngineView(fib=fib, sync=StaticSync(fib, Snapshot([], [], "static")),
                      workers=WorkerSupervisor(None), links=LinkView("vlan"), version="t")
    return create_app(view, keyring)


# -- the tokens file --------------------------------------------------------------------------


def test_tokens_file_lines_roles_names_and_comments() -> None:
    text = f"# role name token\n\nread prometheus {READ}\n  ADMIN  ops-2026  {ADMIN}  \n"
    tokens = parse_tokens(text, "/x")
    assert [(t.name, t.role) for t in tokens] == [("prometheus", Role.READ), ("ops-2026", Role.ADMIN)]
    assert tokens[0].secret.reveal() == READ and READ not in repr(tokens)


def test_every_bad_line_is_reported_and_no_token_is_echoed() -> None:
    short = "short-token-value"
    text = "\n".join([
        f"read prometheus {READ}",
        f"reader grafana {ADMIN2}",              # 2: role
        f"read bad/name {ADMIN2}",               # 3: name
        f"read prometheus {ADMIN2}",             # 4: name twice
        f"admin ops {short}",                    # 5: too short
        f"admin ops2 {READ}",                    # 6: same token as line 1
        "admin onlytwo",                         # 7: fields
    ])
    with pytest.raises(ConfigError) as err:
        parse_tokens(text, "/etc/x/tokens")
    msg = str(err.value)
    for needle in ("line 2: role 'reader'", "line 3: name 'bad/name'",
                   "line 4: name 'prometheus' is used twice",
                   "line 5 (ops): the token is 17 characters long", "line 6 (ops2): the same token",
                   "line 7: has 2 fields"):
        assert needle in msg, msg
    for value in (READ, ADMIN2, short):
        assert value not in msg


def test_tokens_file_is_checked_like_the_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"read prometheus {READ}\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        read_tokens_file(path)
    path.chmod(0o600)
    assert [t.name for t in read_tokens_file(path)] == ["prometheus"]
    with pytest.raises(ConfigError, match="does not exist"):
        read_tokens_file(tmp_path / "missing")
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_tokens_file(link)


def test_the_admin_token_and_the_file_do_not_share_a_value_or_a_name(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"read prometheus {READ}\n".encode())
    os.close(fd)
    assert [(t.name, t.role) for t in keyring_tokens(ADMIN, "api.token", path)] == [
        ("api.token", Role.ADMIN), ("prometheus", Role.READ)]
    with pytest.raises(ConfigError, match=r"also the api\.token token"):
        keyring_tokens(READ, "api.token", path)
    with pytest.raises(ConfigError, match="reserved"):
        keyring_tokens(ADMIN, "prometheus", path)


# -- the decision -----------------------------------------------------------------------------


@given(st.text(alphabet=st.characters(min_codepoint=65, max_codepoint=90), min_size=1, max_size=8))
def test_read_role_is_exactly_the_safe_methods(method: str) -> None:
    assert allows(Role.ADMIN, method)
    assert allows(Role.READ, method) == (method in READ_METHODS)


def test_authorize_401_403_and_the_token_it_found() -> None:
    ring = _keyring()
    assert authorize(f"Bearer {READ}", "GET", "/status", ring) == ring.tokens()[1]
    assert authorize(f"bearer {ADMIN}", "POST", "/resync", ring) == ring.tokens()[0]
    no = authorize(f"Bearer {READ}", "POST", "/resync", ring)
    assert isinstance(no, Refusal) and no.status == 403 and "'prometheus' has the read role" in no.detail
    for header in (None, "Bearer", "Basic abc", f"Bearer {READ}x"):
        r = authorize(header, "GET", "/status", ring)
        assert isinstance(r, Refusal) and r.status == 401
    r = authorize(f"Bearer {ADMIN}", "GET", "/status", Keyring())
    assert isinstance(r, Refusal) and r.status == 401 and "no API token configured" in r.detail


def test_keyring_replace_swaps_the_whole_set() -> None:
    ring = _keyring()
    assert ring.match(ADMIN.encode()) is not None
    ring.replace([ApiToken("ops-new", Role.ADMIN, Secret(ADMIN2))])
    assert ring.match(ADMIN.encode()) is None and ring.match(READ.encode()) is None
    assert ring.match(ADMIN2.encode()) == ApiToken("ops-new", Role.ADMIN, Secret(ADMIN2))
    assert ring.describe() == "read: -; admin: ops-new"


# -- every route, every role ------------------------------------------------------------------


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for r in app.routes:
        if isinstance(r, APIRoute | Route):
            for m in sorted(r.methods or ()):
                out.append((m, r.path))
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_is_checked_with_every_role(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(_keyring())
    client = TestClient(app, raise_server_exceptions=False)
    routes = _routes(app)
    # the enumeration sees the API (a route added later is covered by this very loop)
    assert {("GET", "/status"), ("POST", "/resync"), ("GET", "/metrics"), ("GET", "/openapi.json"),
            ("GET", "/resync/{job_id}")} <= set(routes)
    caplog.set_level(logging.DEBUG)
    seen_admin_only = []
    for method, path in routes:
        url = _concrete(path)
        kw: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        if path in OPEN_PATHS:
            assert client.request(method, url, **kw).status_code not in (401, 403), (method, path)
            continue
        none = client.request(method, url, **kw)
        assert none.status_code == 401 and none.headers["content-type"] == PROBLEM, (method, path)
        read = client.request(method, url, headers={"Authorization": f"Bearer {READ}"}, **kw)
        admin = client.request(method, url, headers={"Authorization": f"Bearer {ADMIN}"}, **kw)
        assert admin.status_code not in (401, 403), (method, path, admin.text)
        if method in READ_METHODS:
            assert read.status_code not in (401, 403), (method, path, read.text)
        else:
            assert read.status_code == 403 and read.headers["content-type"] == PROBLEM, (method, path)
            assert read.json()["detail"].startswith("the token 'prometheus' has the read role")
            seen_admin_only.append((method, path))
    assert ("POST", "/resync") in seen_admin_only
    # a state change is logged with the token's name, never its value
    assert "POST /resync by token 'ops' (admin)" in caplog.text
    assert ADMIN not in caplog.text and READ not in caplog.text


def test_the_schema_documents_403_where_a_read_token_meets_it() -> None:
    client = TestClient(_app(_keyring()))
    doc = client.get("/openapi.json", headers={"Authorization": f"Bearer {READ}"}).json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path in OPEN_PATHS:
                continue
            assert "401" in op["responses"], (method, path)
            assert ("403" in op["responses"]) == (method.upper() not in READ_METHODS), (method, path)


def test_a_request_sees_the_keyring_as_it_is_now() -> None:
    ring = _keyring()
    client = TestClient(_app(ring))
    assert client.get("/status", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    ring.replace([ApiToken("grafana", Role.READ, Secret(ADMIN2))])
    assert client.get("/status", headers={"Authorization": f"Bearer {READ}"}).status_code == 401
    assert client.get("/status", headers={"Authorization": f"Bearer {ADMIN2}"}).status_code == 200


TOKEN_CHARS = st.characters(min_codepoint=33, max_codepoint=126)


@given(st.lists(st.tuples(st.sampled_from(["read", "admin", "READ", "root", ""]),
                          st.text(TOKEN_CHARS, min_size=0, max_size=8),
                          st.text(TOKEN_CHARS, min_size=12, max_size=48)), min_size=1, max_size=6))
def test_a_tokens_file_problem_never_repeats_a_token(lines: list[tuple[str, str, str]]) -> None:
    text = "\n".join(" ".join(x for x in line if x) for line in lines)
    try:
        tokens = parse_tokens(text, "/f")
    except ConfigError as exc:
        # values are longer than any role or name, so one in the message could only be echoed
        for _, _, value in lines:
            assert value not in str(exc)
        return
    assert all(t.role in (Role.READ, Role.ADMIN) and len(t.secret.reveal()) >= 32 for t in tokens)


def test_wrong_tokens_are_summarised_in_the_log() -> None:
    from api.auth import RefusalLog

    r = RefusalLog(every=60)
    assert r.note("192.0.2.1", 0.0) == "refused 1 request(s) with a wrong bearer token (401) from 192.0.2.1"
    assert all(r.note("192.0.2.2", t) is None for t in (1.0, 2.0, 59.0))
    assert r.note("192.0.2.1", 61.0) == ("refused 4 request(s) with a wrong bearer token (401) from "
                                         "192.0.2.1, 192.0.2.2 in the last 61 s")


def test_a_wrong_token_is_logged_without_its_value(caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(_app(_keyring()))
    caplog.set_level(logging.WARNING)
    guess = "guessed-" + "x" * 30
    for _ in range(3):
        assert client.get("/status", headers={"Authorization": f"Bearer {guess}"}).status_code == 401
    lines = [r.getMessage() for r in caplog.records if "wrong bearer token" in r.getMessage()]
    assert lines == ["refused 1 request(s) with a wrong bearer token (401) from testclient"]
    assert guess not in caplog.text
