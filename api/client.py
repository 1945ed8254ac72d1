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
    ca_file: Path | None = None       # trust anchor for an https URL (None: the system's CAs)
    client_cert: Path | None = None   # mTLS: the client's certificate (and key, or in one file)
    client_key: Path | None = None


def resolve_target(url: str | None, token: str | None, config: str | None, *,
                   ca_file: str | None = None, client_cert: str | None = None,
                   client_key: str | None = None) -> Target:
    """Options win over the environment (XCAST6_API_URL / XCAST6_API_TOKEN / XCAST6_API_CA_FILE /
    XCAST6_API_CLIENT_CERT / XCAST6_API_CLIENT_KEY), which wins over the config file
    (XCAST6_CONFIG, default /etc/xcast6-engine/engine.toml): its API URL, its token or the one the
    daemon generated in its state directory, and when the URL comes from there too, for an API with
    TLS, its own certificate (``api.tls_cert``) as the one the CLI trusts."""
    url = url or os.environ.get("XCAST6_API_URL")
    token = token or os.environ.get("XCAST6_API_TOKEN")
    ca_file = ca_file or os.environ.get("XCAST6_API_CA_FILE")
    client_cert = client_cert or os.environ.get("XCAST6_API_CLIENT_CERT")
    client_key = client_key or os.environ.get("XCAST6_API_CLIENT_KEY")
    config = config or os.environ.get("XCAST6_CONFIG")
    if config is None and Path(DEFAULT_CONFIG).exists() and (url is None or token is None):
        config = DEFAULT_CONFIG
    if config is not None and (url is None or token is None):
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            raise ClientError(EXIT_USAGE, str(exc).replace("\n", " ")) from None
        if url is None:
            url = cfg.api_url()
            # this engine's own API: its own certificate is what to trust (not for another URL)
            if ca_file is None and cfg.api.tls_cert is not None:
                ca_file = str(cfg.api.tls_cert)
        if token is None:
            if cfg.api.token is not None:
                token = cfg.api.token.reveal()
            else:
                try:
                    token = (cfg.engine.state_dir / "api-token").read_text().strip()
                except OSError:
                    token = None
    return Target(url=(url or DEFAULT_URL).rstrip("/"), token=token,
                  ca_file=_path(ca_file), client_cert=_path(client_cert), client_key=_path(client_key))


def _path(value: str | None) -> Path | None:
    return None if not value else Path(value)


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
        # the server is always verified (issue 20): against the named CA file, else the system's
        verify: Any = True
        if target.url.lower().startswith("https:"):
            from api.tls import client_context

            try:
                verify = client_context(target.ca_file, target.client_cert, target.client_key)
            except ValueError as exc:
                raise ClientError(EXIT_USAGE, str(exc)) from None
        # trust_env=False: a proxy from the environment must not see the token for a loopback API
        self._http = httpx.Client(base_url=target.url, headers=headers, timeout=timeout, trust_env=False,
                                  verify=verify)

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
                f"cannot reach the engine API at {self.target.url}: {exc or type(exc).__name__}"
                + _tls_hint(str(exc), self.target),
            ) from None
        if resp.status_code in ok:
            ctype = resp.headers.get("content-type", "")
            return resp.json() if "json" in ctype else resp.text
        detail = _problem_detail(resp)
        if resp.status_code == 401:
            hint = "" if self.target.token else " (no token: set XCAST6_API_TOKEN, --token or api.token)"
            raise ClientError(EXIT_AUTH, f"unauthorized: {detail}{hint}")
        if resp.status_code == 403:
            raise ClientError(EXIT_AUTH, f"forbidden: {detail}")
        raise ClientError(EXIT_API, f"{method} {path}: {resp.status_code} {detail}")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)


def _tls_hint(error: str, target: Target) -> str:
    """What to do about a TLS failure, from the error text of ssl/httpx."""
    if "CERTIFICATE_VERIFY_FAILED" in error:
        trusted = f"CA file {target.ca_file}" if target.ca_file else "the system's CAs"
        return (f" (the API's certificate is not trusted by {trusted}, or does not name the host of the "
                "URL: name the CA with XCAST6_API_CA_FILE or --ca-file)")
    if "CERTIFICATE_REQUIRED" in error or "certificate required" in error.lower():
        return " (the API requires a client certificate: XCAST6_API_CLIENT_CERT/XCAST6_API_CLIENT_KEY)"
    if "WRONG_VERSION_NUMBER" in error or "record layer failure" in error:
        return " (TLS and plain HTTP mixed up: check http:// or https:// in the URL)"
    return ""


def _problem_detail(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason_phrase
    if isinstance(doc, dict):
        return str(doc.get("detail") or doc.get("title") or doc)
    return str(doc)
