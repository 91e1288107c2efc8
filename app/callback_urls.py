"""Where a webhook may go: public addresses only, unless ``WEBHOOK_ALLOWED_NETWORKS`` names a
network.

A callback URL is the tenant's, so without this the service would POST wherever a tenant points
it: at the deployment's database, broker or cloud metadata address. Every spelling counts, as the
system's resolver reads it: ``2130706433``, ``0x7f.1``, ``017700000001`` and ``127.1`` are all
127.0.0.1 to ``inet_aton``, and ``::ffff:127.0.0.1`` is too once an IPv6 socket connects to it.

Two checks, one rule. At upload a host that is an address or a ``localhost`` name is refused at
once (no DNS lookup: a name can change, and its answer is none of the tenant's business). At
delivery the name is resolved, each answer checked, and the worker connects to the address it
checked (``worker/webhook_client.py``), so a second lookup cannot rebind it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Names every resolver answers with a loopback address (RFC 6761, and Debian's /etc/hosts).
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NAT64 = IPv6Network("64:ff9b::/96")


class AddressRefused(ValueError):
    """A callback address the service does not send to; the message is the tenant's to read."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``WEBHOOK_ALLOWED_NETWORKS``: CIDRs separated by commas (a bare address is a /32 or /128)."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"not a network (a CIDR such as 10.0.0.0/8): {item!r}") from exc
    return tuple(networks)


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a resolver takes for one, or None for a name."""
    text = host.strip("[]").removesuffix(".")
    try:
        return ipaddress.ip_address(text)  # dotted quads, and IPv6 with or without a zone
    except ValueError:
        pass
    value = _inet_aton(text)
    return None if value is None else IPv4Address(value)


def _inet_aton(text: str) -> int | None:
    """inet_aton's reading: one to four parts, each decimal, octal (a leading 0) or hex (0x);
    the last part fills the bytes the others leave."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                values.append(int(lowered[2:] or "0", 16))
            elif lowered.startswith("0") and len(lowered) > 1:
                values.append(int(lowered[1:], 8))
            elif lowered.isascii() and lowered.isdigit():
                values.append(int(lowered))
            else:
                return None
        except ValueError:
            return None
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = last
    for index, byte in enumerate(leading):
        value |= byte << (24 - 8 * index)
    return value


def is_local_name(host: str) -> bool:
    name = host.lower().removesuffix(".")
    return name in LOCAL_NAMES or name.endswith(".localhost")


def refused(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Whether the service does not send to ``address``: anything but a public unicast address,
    unless an allowed network holds it."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in allowed):
        return False
    special = (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
    if special or not isinstance(address, IPv6Address):
        return special
    return address.is_site_local or any(refused(v4, allowed) for v4 in _embedded_ipv4(address))


def _embedded_ipv4(address: IPv6Address) -> Iterable[IPv4Address]:
    """IPv4 addresses an IPv6 one reaches through a relay: 6to4, Teredo, NAT64."""
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield from address.teredo
    if address in _NAT64:
        yield IPv4Address(int(address) & 0xFFFFFFFF)


def check_host(host: str, allowed: Sequence[IPNetwork] = ()) -> None:
    """At upload: refuse a host that is a refused address or a ``localhost`` name. Other names
    are checked, resolved, at each delivery."""
    if not host:
        raise AddressRefused("callback_url has no host")
    address = literal_address(host)
    if is_local_name(host) or (address is not None and refused(address, allowed)):
        raise AddressRefused(
            f"callback_url's host {host!r} is refused: webhooks go to public addresses only "
            "(not loopback, private, link-local, multicast, reserved or unspecified ones)"
        )


def pick(addresses: Iterable[IPAddress], allowed: Sequence[IPNetwork] = ()) -> IPAddress:
    """At delivery: the first resolved address the service sends to (the one to connect to);
    ``AddressRefused`` when there is none."""
    for address in addresses:
        if not refused(address, allowed):
            if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
                return address.ipv4_mapped
            return address
    raise AddressRefused("the callback's host resolves to no address webhooks may go to")
