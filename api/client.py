"""HTTP client of the engine API used by the CLI; errors become one-line reasons + exit codes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.config import ConfigError, load_config
from engine.tools.clikit import (  # noqa: F401  (re-exported: the client's callers use these names)
    EXIT_AUTH,
    EXIT_DIFFERS,
    EXIT_FAILED,
    EXIT_NOT_APPLIED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    import httpx

DEFAULT_CONFIG = "/etc/xcast6-engine/engine.toml"
DEFAULT_URL = "http://127.0.0.1:8406"

# Exit codes scripts can rely on: the one table of every command (engine/tools/clikit.py).
EXIT_API = EXIT_FAILED  # the API answered with an error (problem document)


class ClientError(Exception):
    """A CLI-level failure: ``exit_code`` and a one-line ``reason``."""

    def __init__(self, exit_code: int, reason: str) -> None:
        super().__init__(reason)
        self.exit_code = exit_code
        self.reason = reason


@dataclass
class Target:
    url: str
    token: str | None


def resolve_target(url: str | None, token: str | None, config: str | None) -> Target:
    """Options win over the environment (XCAST6_API_URL / XCAST6_API_TOKEN), which wins over
    the config file (XCAST6_CONFIG, default /etc/xcast6-engine/engine.toml) and the token the
    daemon generated in its state directory."""
    url = url or os.environ.get("XCAST6_API_URL")
    token = token or os.environ.get("XCAST6_API_TOKEN")
    config = config or os.environ.get("XCAST6_CONFIG")
    if config is None and Path(DEFAULT_CONFIG).exists() and (url is None or token is None):
        config = DEFAULT_CONFIG
    if config is not None and (url is None or token is None):
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            raise ClientError(EXIT_USAGE, str(exc).replace("\n", " ")) from None
        url = url or cfg.api_url()
        if token is None:
            if cfg.api.token is not None:
                token = cfg.api.token.reveal()
            else:
                try:
                    token = (cfg.engine.state_dir / "api-token").read_text().strip()
                except OSError:
                    token = None
    return Target(url=(url or DEFAULT_URL).rstrip("/"), token=token)


class ApiClient:
    def __init__(self, target: Target, timeout: float = 60.0) -> None:
        # Imported here: httpx is a third of the CLI's start-up (~0.1 s here, ~10 s in the TCG
        # guest of the vlan lab), and only the commands that talk to the API need it.
        import httpx

        self._httpx = httpx
        headers = {"Accept": "application/json"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self.target = target
        # trust_env=False: a proxy from the environment must not see the token for a loopback API
        self._http = httpx.Client(base_url=target.url, headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        httpx = self._httpx
        try:
            resp = self._http.request(method, path, params=params, json=json)
        except httpx.TimeoutException:
            raise ClientError(EXIT_UNREACHABLE, f"{self.target.url}{path}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(
                EXIT_UNREACHABLE,
                f"cannot reach the engine API at {self.target.url}: {exc or type(exc).__name__}",
            ) from None
        if resp.status_code in ok:
            ctype = resp.headers.get("content-type", "")
            return resp.json() if "json" in ctype else resp.text
        detail = _problem_detail(resp)
        if resp.status_code == 401:
            hint = "" if self.target.token else " (no token: set XCAST6_API_TOKEN, --token or api.token)"
            raise ClientError(EXIT_AUTH, f"unauthorized: {detail}{hint}")
        raise ClientError(EXIT_API, f"{method} {path}: {resp.status_code} {detail}")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)


def _problem_detail(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason_phrase
    if isinstance(doc, dict):
        return str(doc.get("detail") or doc.get("title") or doc)
    return str(doc)
