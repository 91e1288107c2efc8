"""Where webhooks may go: every spelling of a local address is refused, at upload over HTTP (on
SQLite and PostgreSQL) and by the rule the worker applies at delivery."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.callback_urls import (
    AddressRefused,
    check_host,
    literal_address,
    parse_networks,
    pick,
    refused,
)
from app.main import create_app
from app.settings import Settings, get_settings
from tests.app.test_api import upload

LOOPBACK = IPv4Address("127.0.0.1")
# Hosts as a tenant may write them, and the address each one reaches.
LOOPBACK_SPELLINGS = {
    "127.0.0.1": LOOPBACK,
    "2130706433": LOOPBACK,  # one 32-bit number
    "0x7f.1": LOOPBACK,  # hex, two parts
    "0x7f000001": LOOPBACK,
    "017700000001": LOOPBACK,  # octal
    "0177.0.0.1": LOOPBACK,
    "127.000.000.001": LOOPBACK,
    "127.1": LOOPBACK,  # the last part fills the rest
    "127.0.1": LOOPBACK,
    "127.0.0.1.": LOOPBACK,  # a trailing dot
    "[::ffff:127.0.0.1]": ip_address("::ffff:127.0.0.1"),  # IPv4-mapped IPv6
    "[::ffff:7f00:1]": ip_address("::ffff:7f00:1"),
    "[::1]": ip_address("::1"),
    "[0:0:0:0:0:0:0:1]": ip_address("::1"),
    "0.0.0.0": IPv4Address("0.0.0.0"),  # connect() takes it for this host
    "0": IPv4Address("0.0.0.0"),
    "[::]": ip_address("::"),
}
OTHER_REFUSED = [
    "169.254.169.254",  # cloud metadata
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "240.0.0.1",  # reserved
    "198.18.0.1",
    "[fe80::1]",  # link-local
    "[fc00::1]",  # unique local
    "[fec0::1]",  # site-local
    "[ff02::1]",  # multicast
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    "[::127.0.0.1]",  # IPv4-compatible
    "[2001::1]",  # Teredo
]
LOCAL_NAMES = ["localhost", "LOCALHOST.", "api.localhost", "localhost.localdomain", "ip6-loopback"]
PUBLIC = ["8.8.8.8", "0x08080808", "134744072", "[2606:4700:4700::1111]", "hooks.example.com"]


@pytest.mark.parametrize(("host", "address"), LOOPBACK_SPELLINGS.items())
def test_every_spelling_reads_as_the_address_a_resolver_makes_of_it(
    host: str, address: object
) -> None:
    assert literal_address(host) == address
    assert refused(literal_address(host) or LOOPBACK)


@pytest.mark.parametrize("host", [*LOOPBACK_SPELLINGS, *OTHER_REFUSED, *LOCAL_NAMES])
def test_local_and_special_hosts_are_refused(host: str) -> None:
    with pytest.raises(AddressRefused, match="public addresses only"):
        check_host(host.strip("[]"))


@pytest.mark.parametrize("host", PUBLIC)
def test_public_hosts_pass(host: str) -> None:
    check_host(host.strip("[]"))


def test_names_are_not_addresses() -> None:
    for name in ("hooks.example.com", "1.2.3.4.5", "0x7g.1", "08.1", "1e3", "99999999999", ""):
        assert literal_address(name) is None, name


def test_allowed_networks_open_named_ranges_only() -> None:
    allowed = parse_networks("127.0.0.1/32, 10.1.0.0/16,fd00::/8")
    assert not refused(LOOPBACK, allowed)
    assert not refused(ip_address("::ffff:127.0.0.1"), allowed)  # mapped: the IPv4 rule
    assert not refused(ip_address("10.1.2.3"), allowed)
    assert not refused(ip_address("fd00::5"), allowed)
    assert refused(ip_address("127.0.0.2"), allowed)
    assert refused(ip_address("10.2.0.1"), allowed)
    assert refused(ip_address("169.254.169.254"), allowed)
    check_host("2130706433", allowed)
    with pytest.raises(AddressRefused):
        check_host("localhost", allowed)  # a name: checked, resolved, at delivery
    with pytest.raises(ValueError, match="not a network"):
        parse_networks("10.0.0.0/8,intranet")


def test_at_delivery_the_first_allowed_answer_is_the_one_connected_to() -> None:
    answers = [ip_address("127.0.0.1"), ip_address("::ffff:93.184.216.34"), LOOPBACK]
    assert pick(answers) == IPv4Address("93.184.216.34")
    with pytest.raises(AddressRefused):
        pick([LOOPBACK, ip_address("10.0.0.1")])
    assert pick([LOOPBACK], parse_networks("127.0.0.0/8")) == LOOPBACK


def test_uploads_with_a_local_callback_are_refused_with_a_clear_422(
    client: TestClient, npz_path: Path
) -> None:
    for host in [*LOOPBACK_SPELLINGS, "169.254.169.254", "10.0.0.1", "[fe80::1]", "localhost"]:
        for port in ("", ":6379", ":5432"):
            url = f"http://{host}{port}/hook"
            response = upload(client, npz_path, callback_url=url, reuse="false")
            assert response.status_code == 422, (url, response.text)
            detail = response.json()["detail"]
            assert "callback_url" in detail
            assert "public addresses only" in detail
    assert client.get("/audits").json()["total"] == 0
    accepted = upload(client, npz_path, callback_url="https://hooks.example.com:8443/audit")
    assert accepted.status_code == 202, accepted.text


def test_an_allowed_network_is_accepted_at_upload(
    settings: Settings, npz_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    get_settings.cache_clear()
    allowed = settings.model_copy(update={"webhook_allowed_networks": "127.0.0.0/8"})
    try:
        with TestClient(create_app(allowed)) as client:
            ok = upload(client, npz_path, callback_url="http://127.0.0.1:9/h", reuse="false")
            assert ok.status_code == 202, ok.text
            refused_ = upload(client, npz_path, callback_url="http://10.0.0.1/h", reuse="false")
            assert refused_.status_code == 422
    finally:
        get_settings.cache_clear()
