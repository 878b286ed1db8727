"""Where webhooks may go. In a shared deployment a tenant must not make the server call its own
private network (the database, a cloud metadata endpoint): such addresses are refused unless the
operator allows them. Checked at submit time for literal addresses and again at every delivery,
after DNS resolution, since a name can change what it points to."""

import ipaddress
import socket
from urllib.parse import urlsplit


def _private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
        or address.is_multicast or address.is_unspecified
    )


def url_problem(url: str, what: str = "a webhook URL") -> str | None:
    """What is wrong with the URL itself, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} is http:// or https:// with a host"
    if parts.username or parts.password:
        return f"{what} must not hold credentials"
    return None


def literal_private(url: str) -> bool:
    try:
        return _private(ipaddress.ip_address(urlsplit(url).hostname or ""))
    except ValueError:
        return False


def destination_problem(url: str, allow_private: bool) -> str | None:
    """Resolves the host; says why it may not be called, or None."""
    problem = url_problem(url)
    if problem is not None or allow_private:
        return problem
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        return f"cannot resolve {parts.hostname}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if _private(address):
            return (
                f"{parts.hostname} resolves to the private address {address}; "
                "the operator must set COMPRESSO_WEBHOOKS__ALLOW_PRIVATE=true to allow it"
            )
    return None
