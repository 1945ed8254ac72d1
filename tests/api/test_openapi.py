"""schemathesis against the OpenAPI document of a running daemon (in this process): no 5xx,
responses match their declared status codes, media types, headers and schemas; with each token
role (issue 20: a read token meets 403 on what changes state, and that is documented too)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import TOKEN, InProcessDaemon, free_port, router_namespace, write_config

pytestmark = [pytest.mark.root, pytest.mark.netns]
READ_TOKEN = "xapi-read-token-" + "r" * 24


@pytest.fixture(scope="module")
def engine_api() -> Iterator[str]:
    tmp = Path(tempfile.mkdtemp(prefix="xapi-st-"))
    with router_namespace("xapi-s") as router:
        cfg = tmp / "engine.toml"
        tokens = tmp / "api-tokens"
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, f"read prometheus {READ_TOKEN}\n".encode())
        os.close(fd)
        write_config(cfg, tmp / "state", f"kernel://{router.ns}", free_port(), link=router.host_link,
                     change_detect=0, extra=f'tokens_file = "{tokens}"\n')
        d = InProcessDaemon(cfg)
        try:
            yield d.url
        finally:
            d.stop()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def api_schema(engine_api: str) -> schemathesis.BaseSchema:
    # the schema is behind the token (issue 15)
    return schemathesis.openapi.from_url(engine_api + "/openapi.json",
                                         headers={"Authorization": f"Bearer {TOKEN}"})


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _run_all(api_schema: schemathesis.BaseSchema, examples: int, headers: dict[str, str]) -> list[str]:
    """Every operation, ``examples`` generated cases each (schemathesis' pytest plugin does not
    support this pytest version, so the operations are driven through hypothesis directly)."""
    seen = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        seen.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        run()
    return seen


def test_api_conforms(api_schema: schemathesis.BaseSchema) -> None:
    seen = _run_all(api_schema, 15, {"Authorization": f"Bearer {TOKEN}"})
    assert {
        "GET /status",
        "GET /routes",
        "GET /routes/lookup",
        "GET /routes/diff",
        "POST /resync",
        "GET /resync/{job_id}",
        "GET /interfaces",
        "GET /stats",
        "GET /metrics",
        "GET /healthz",
        "GET /readyz",
    } <= set(seen)


def test_api_conforms_with_a_read_token(api_schema: schemathesis.BaseSchema, engine_api: str) -> None:
    # the read role: GET answers as for admin, POST /resync is a documented 403
    import httpx

    seen = _run_all(api_schema, 10, {"Authorization": f"Bearer {READ_TOKEN}"})
    assert "POST /resync" in seen and "GET /metrics" in seen
    r = httpx.post(engine_api + "/resync", headers={"Authorization": f"Bearer {READ_TOKEN}"}, trust_env=False)
    assert r.status_code == 403


def test_api_conforms_without_token(api_schema: schemathesis.BaseSchema) -> None:
    # 401 problem documents (and the health answers) must match the document too
    _run_all(api_schema, 5, {})


def test_openapi_document_is_complete(engine_api: str) -> None:
    import httpx

    assert httpx.get(engine_api + "/openapi.json", trust_env=False).status_code == 401
    doc = httpx.get(engine_api + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"},
                    trust_env=False).json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ok = op["responses"].get("200") or op["responses"].get("202")
            assert ok and ok.get("content"), f"{method.upper()} {path} has no success schema"
            if path not in ("/healthz", "/readyz"):
                assert "401" in op["responses"], f"{method.upper()} {path} does not document 401"
                assert op.get("security"), f"{method.upper()} {path} has no security requirement"
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
