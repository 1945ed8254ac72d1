"""The router's SSH host key pinned on the engine host (tasks/known_hosts.yml).

Pure functions: validate the public keys given in the inventory (``router_ssh_host_keys``) or read by
``ssh-keyscan``, compute their OpenSSH SHA256 fingerprints (what ``ssh-keygen -lf`` and the router's
console print), and write the OpenSSH known_hosts lines the engine's NETCONF client loads
(sync/netconf.py: paramiko ``HostKeys``, looked up as ``[host]:port`` for a port other than 22).

Formats: a public key is ``TYPE BASE64 [comment]`` as in an OpenSSH ``.pub`` file or a
``known_hosts``/``ssh-keyscan`` line after its host field (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT",
https://man.openbsd.org/sshd.8#SSH_KNOWN_HOSTS_FILE_FORMAT).  The base64 blob starts with the key
type again as an SSH string (RFC 4253 section 6.6), which is checked, so a pasted key of one type
labelled as another is refused rather than pinned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import struct
from typing import Any

KEY_TYPES = (
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
)


def _blob(key_type: str, b64: str, where: str) -> bytes:
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the key is not base64") from None
    if len(blob) < 4:
        raise ValueError(f"{where}: the key is too short")
    (n,) = struct.unpack(">I", blob[:4])
    inner = blob[4:4 + n].decode("ascii", "replace")
    if inner != key_type:
        raise ValueError(f"{where}: the key says it is {inner!r}, not {key_type!r}")
    return blob


def parse_public_key(text: Any, where: str = "router_ssh_host_keys") -> tuple[str, str]:
    """``(type, base64)`` of one public key: ``TYPE BASE64 [comment]`` or ``HOST TYPE BASE64``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: expected 'TYPE BASE64' (e.g. 'ssh-ed25519 AAAAC3...'), got {text!r}")
    words = text.split()
    if words[0] not in KEY_TYPES and len(words) >= 3 and words[1] in KEY_TYPES:
        words = words[1:]  # a known_hosts / ssh-keyscan line: drop the host field
    if words[0] not in KEY_TYPES or len(words) < 2:
        raise ValueError(f"{where}: {text.strip()[:40]!r}...: the key type must be one of "
                         f"{', '.join(KEY_TYPES)}, followed by the base64 key")
    _blob(words[0], words[1], where)
    return words[0], words[1]


def ssh_fingerprint(text: Any, where: str = "router_ssh_host_keys") -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key (unpadded base64 of the blob's SHA-256)."""
    _key_type, b64 = parse_public_key(text, where)
    digest = hashlib.sha256(base64.b64decode(b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def keyscan_keys(stdout: Any) -> list[str]:
    """The ``TYPE BASE64`` keys of ``ssh-keyscan`` output (comment lines skipped)."""
    if not isinstance(stdout, str):
        raise ValueError(f"ssh-keyscan: expected its text output, got {type(stdout).__name__}")
    keys = []
    for n, line in enumerate(stdout.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key_type, b64 = parse_public_key(line, f"ssh-keyscan line {n}")
        keys.append(f"{key_type} {b64}")
    return keys


def known_hosts_lines(keys: Any, host: str, port: Any = 22) -> str:
    """known_hosts text pinning ``keys`` for ``host`` (an address or name) on ``port``."""
    if isinstance(keys, str) or not isinstance(keys, list) or not keys:
        raise ValueError("router_ssh_host_keys: expected a non-empty list of 'TYPE BASE64' public keys")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"SSH port {port!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"SSH port {port} is not in 1..65535")
    try:
        name = str(ipaddress.ip_address(str(host).strip("[]")))  # compressed, lower case, like the URL
    except ValueError:
        name = str(host).lower()
    pattern = name if port == 22 else f"[{name}]:{port}"
    lines = []
    for i, key in enumerate(keys):
        key_type, b64 = parse_public_key(key, f"router_ssh_host_keys[{i}]")
        lines.append(f"{pattern} {key_type} {b64}\n")
    return "".join(lines)


class FilterModule:
    """Ansible entry point (errors become AnsibleFilterError naming the bad entry)."""

    def filters(self) -> dict[str, Any]:
        def wrap(fn: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except ValueError as exc:
                    from ansible.errors import AnsibleFilterError

                    raise AnsibleFilterError(str(exc)) from None
            return run

        return {
            "xcast6_ssh_fingerprint": wrap(ssh_fingerprint),
            "xcast6_keyscan_keys": wrap(keyscan_keys),
            "xcast6_known_hosts": wrap(known_hosts_lines),
        }
