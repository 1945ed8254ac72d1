"""Talk to a lab engine's daemon API, which listens on loopback inside the engine namespace.

Requests run in a short-lived thread that enters the namespace first (network namespaces are
per thread), so tests and ``lab demo`` reach ``127.0.0.1:<port>`` of each engine without
exposing the API beyond its namespace.  The API speaks TLS as deployed; the server is verified
against the lab's CA (lab/build.py ``lab_pki``), host name included.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from api.tls import client_context
from lab import netns
from lab.topology import API_PORT, Topology


def api_url(topo: Topology, path: str = "") -> str:
    return f"https://127.0.0.1:{API_PORT}{path}"


def ca_file(topo: Topology) -> Path:
    """The CA the lab's clients verify the engines' API with (``XCAST6_API_CA_FILE`` for the CLI)."""
    return topo.api_ca_path


def token(topo: Topology) -> str:
    """The lab's API token (one for both engines, written by ``lab up``)."""
    try:
        return topo.api_token_path.read_text().strip()
    except FileNotFoundError:
        raise netns.LabError(
            f"lab {topo.prefix!r} is not up (no API token at {topo.api_token_path}): "
            "run `xcast6-engine lab up`"
        ) from None


def request(topo: Topology, r: str, method: str, path: str, *, auth: bool = True,
            timeout: float = 10.0, **kwargs: Any) -> httpx.Response:
    """One HTTP request to engine ``r``'s API from inside its namespace."""
    headers = dict(kwargs.pop("headers", {}) or {})
    if auth:
        headers["Authorization"] = f"Bearer {token(topo)}"
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            verify = client_context(ca_file(topo))
            with netns.in_netns(topo.engine_ns(r)), httpx.Client(timeout=timeout, verify=verify,
                                                                  trust_env=False) as c:
                box["resp"] = c.request(method, api_url(topo, path), headers=headers, **kwargs)
        except BaseException as exc:   # re-raised in the caller's thread
            box["exc"] = exc

    t = threading.Thread(target=go, name=f"lab-api-{r}", daemon=True)
    t.start()
    t.join(timeout + 5)
    if "exc" in box:
        raise box["exc"]
    if "resp" not in box:
        raise TimeoutError(f"engine {r} API did not answer {method} {path} within {timeout}s")
    resp: httpx.Response = box["resp"]
    return resp


def get_json(topo: Topology, r: str, path: str, timeout: float = 10.0) -> Any:
    """GET ``path`` and return its JSON body; raise on an HTTP error status."""
    resp = request(topo, r, "GET", path, timeout=timeout)
    resp.raise_for_status()
    return resp.json()


def status(topo: Topology, r: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The daemon's ``/status``, or None while it does not answer."""
    doc, _err = status_or_error(topo, r, timeout)
    return doc


def status_or_error(topo: Topology, r: str, timeout: float = 10.0) -> tuple[dict[str, Any] | None, str]:
    """(``/status``, "") or (None, why it could not be read)."""
    try:
        doc = get_json(topo, r, "/status", timeout=timeout)
    except (httpx.HTTPError, OSError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return dict(doc), ""
