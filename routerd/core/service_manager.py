"""What systemd tells the daemon through its environment, and what the daemon tells it back.

Pure: the environment, the process id and file identities are parameters.

Invariants:

* The watchdog is on only when ``WATCHDOG_USEC`` is a positive integer and ``WATCHDOG_PID``
  is unset or names this process (as ``sd_watchdog_enabled(3)`` decides); pings are sent at
  half the timeout, so one late wake-up never trips it.
* The journal is used only when ``JOURNAL_STREAM`` (``"<device>:<inode>"``) names the very
  file stderr is: a daemon whose stderr was redirected elsewhere keeps logging to stderr.
* A ``STATUS=`` text is one line of printable characters, at most :data:`STATUS_MAX`
  characters: a component cannot end the line and smuggle in another assignment
  (``READY=1``, ``MAINPID=``) through its summary.
* The ``IPAddressAllow=`` list holds loopback plus every configured network and literal address
  the daemon may reach; host names cannot be expressed there and are returned apart.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from routerd.core.config import Config

__all__ = [
    "STATUS_MAX",
    "IP_ALLOW_LOOPBACK",
    "watchdog_interval",
    "journal_stream_matches",
    "status_line",
    "ip_address_allow",
    "ip_allow_drop_in",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Longest ``STATUS=`` text sent; ``systemctl status`` shows one line.
STATUS_MAX: Final = 200

#: Always allowed: the local model servers and Serena live on loopback.
IP_ALLOW_LOOPBACK: Final = ("127.0.0.0/8", "::1/128")


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or ``None`` when the
    watchdog is off, malformed, or meant for another process (``WATCHDOG_PID``)."""
    raw = env.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return int(raw) / 2 / 1_000_000


def journal_stream_matches(value: str | None, st_dev: int, st_ino: int) -> bool:
    """True if ``JOURNAL_STREAM`` (``value``) names the file whose ``fstat`` gave
    ``st_dev`` and ``st_ino`` — that is, stderr is connected to journald."""
    if not value:
        return False
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    return int(dev) == st_dev and int(ino) == st_ino


def _one_line(text: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(cleaned.split())


def status_line(components: Mapping[str, Any], *, socket_path: str | None) -> str:
    """The ``STATUS=`` text for ``systemctl status``, from ``app.component_status()``.

    Each component whose status map has a string ``"summary"`` (else ``"state"``) contributes
    ``"name: text"`` ("services: 3/10 online", "serena: warm"), or just the text when it
    already starts with the name. With none, the line says where the daemon serves.
    """
    parts: list[str] = []
    for name, value in components.items():
        if not isinstance(value, Mapping):
            continue
        summary, state = value.get("summary"), value.get("state")
        text = _one_line(summary) if isinstance(summary, str) else ""
        if not text and isinstance(state, str):
            text = _one_line(state)
        if not text:
            continue
        label = _one_line(name)
        parts.append(text if text.lower().startswith(label.lower()) else f"{label}: {text}")
    line = ", ".join(parts) if parts else _one_line(f"serving on {socket_path or '?'}")
    if len(line) > STATUS_MAX:
        line = line[: STATUS_MAX - 3].rstrip() + "..."
    return line


def _host_of(endpoint: str) -> str | None:
    try:
        return urlsplit(endpoint).hostname
    except ValueError:
        return None


def ip_address_allow(
    allowed_hosts: Iterable[str],
    allowed_cidrs: Iterable[str],
    endpoints: Iterable[str] = (),
) -> tuple[list[str], list[str]]:
    """``(networks, names)``: the ``IPAddressAllow=`` entries for these settings, and the host
    names among them that systemd cannot take (they must be given as addresses).

    ``allowed_hosts`` and ``allowed_cidrs`` are ``security``'s lists; ``endpoints`` are the
    configured model-server URLs. Loopback is always first; duplicates are dropped.
    """
    networks: list[str] = list(IP_ALLOW_LOOPBACK)
    names: list[str] = []
    kept_nets: list[IPNetwork] = []
    candidates = [*allowed_cidrs, *allowed_hosts, *filter(None, map(_host_of, endpoints))]
    for item in candidates:
        text = item.strip().strip("[]")
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            if text and text != "localhost" and text not in names:
                names.append(text)
            continue
        if net.is_loopback or any(_within(net, kept) for kept in kept_nets):
            continue
        kept_nets.append(net)
        networks.append(str(net))
    return networks, names


def _within(net: IPNetwork, other: IPNetwork) -> bool:
    return net.network_address in other and net.broadcast_address in other


def ip_allow_drop_in(config: Config, source: str | None) -> tuple[str, list[str]]:
    """A systemd drop-in for ``routerd.service`` letting the kernel allow exactly the networks
    ``config`` allows (``routerd --print-ip-allow``), and warnings to show the operator.

    ``source`` names the configuration file in the drop-in's header comment.
    """
    sec = config.security
    services = config.services
    endpoints = [s.endpoint for s in services.builtin().values() if s.enabled and s.endpoint]
    endpoints += [c.endpoint for c in services.custom_endpoints if c.enabled]
    networks, names = ip_address_allow(sec.allowed_hosts, sec.allowed_cidrs, endpoints)
    lines = [
        f"# Written by `routerd --print-ip-allow` from {source or 'the built-in defaults'}.",
        "# Install as /etc/systemd/system/routerd.service.d/ip-allow.conf, then",
        "# `systemctl daemon-reload && systemctl restart routerd`.",
        "[Service]",
    ]
    warnings = [
        f"{name} is a host name; systemd's IPAddressAllow= takes addresses only: "
        "add its address or network to security.allowed_cidrs" for name in names
    ]
    if sec.allow_external:
        lines.append("# security.allow_external is true: the kernel does not enforce an air-gap.")
        lines.append("IPAddressDeny=")
        warnings.append("security.allow_external is true: the drop-in lifts IPAddressDeny=any")
    else:
        lines.append("IPAddressAllow=" + " ".join(networks))
    return "\n".join(lines) + "\n", warnings
