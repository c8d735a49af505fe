"""The rate limiter's parts on their own (server/ratelimit.py): who the client is behind proxies, nested device and
address windows, bounded memory, window reset. The live behaviour is in tests/test_hostile.py."""

from __future__ import annotations

import pytest

from artlens.server.errors import ServiceError
from artlens.server.ratelimit import AdminThrottle, ClientResolver, RateLimiter, WindowTable, device_key
from artlens.server.settings import SettingsError, load_settings


def scope(peer: str, **headers: str) -> dict:
    return {"client": (peer, 50000),
            "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_forwarding_headers_count_only_from_trusted_proxies():
    nobody = ClientResolver([])
    assert nobody.address(scope("192.0.2.9", x_forwarded_for="203.0.113.1")) == "192.0.2.9"
    proxies = ClientResolver(["10.0.0.0/8", "2001:db8:ffff::/48"])
    assert proxies.address(scope("192.0.2.9", x_forwarded_for="203.0.113.1")) == "192.0.2.9"  # not a proxy
    via = "198.51.100.1, 203.0.113.1, 10.1.1.1"  # forged, the real client, a second proxy of ours
    assert proxies.address(scope("10.0.0.5", x_forwarded_for=via)) == "203.0.113.1"
    assert proxies.address(scope("10.0.0.5", x_forwarded_for="203.0.113.1, bogus, unknown")) == "203.0.113.1"
    assert proxies.address(scope("10.0.0.5", x_forwarded_for="bogus")) == "10.0.0.5"  # nothing valid: the proxy
    assert proxies.address(scope("10.0.0.5", x_forwarded_for="[2001:db8:1::5]:443")) == "2001:db8:1::/64"
    assert proxies.address(scope("10.0.0.5", x_forwarded_for="203.0.113.1:8080")) == "203.0.113.1"
    assert proxies.address(scope("10.0.0.5", forwarded="for=203.0.113.1")) == "10.0.0.5"  # not the set header
    rfc7239 = ClientResolver(["10.0.0.0/8"], "forwarded")
    header = 'for=198.51.100.1;proto=https, for="[2001:db8:cafe::17]:4711";by=10.0.0.5, for=10.2.2.2'
    assert rfc7239.address(scope("10.0.0.5", forwarded=header)) == "2001:db8:cafe::/64"
    assert rfc7239.address(scope("10.0.0.5", x_forwarded_for="203.0.113.1")) == "10.0.0.5"
    assert nobody.address(scope("::ffff:192.0.2.7")) == "192.0.2.7"
    assert nobody.address({"client": None, "headers": []}) == "unknown"


def test_device_windows_nest_in_the_address_window_and_reset():
    clock = Clock()
    limiter = RateLimiter(address_factor=2, clock=clock)
    assert [limiter.hit("browse", "a", "d1", 3).allowed for _ in range(4)] == [True, True, True, False]
    assert [limiter.hit("browse", "a", "d2", 3).allowed for _ in range(4)] == [True, True, True, False]
    denied = limiter.hit("browse", "a", "d3", 3)  # the address has had 2 × 3
    assert not denied.allowed and denied.remaining == 0 and 0 < denied.reset_s <= 60
    assert limiter.hit("recognize", "a", "d3", 3).allowed  # another bucket
    assert limiter.hit("browse", "b", None, 3).allowed  # another address
    clock.now += 61
    assert limiter.hit("browse", "a", "d1", 3).allowed  # a new minute


def test_device_ids_past_the_per_address_cap_share_one_bucket():
    limiter = RateLimiter(address_factor=1, clock=Clock())  # 4 distinct devices per address and minute
    for n in range(4):
        assert limiter.hit("browse", "a", f"dev-{n}", 100).allowed
    assert limiter.hit("browse", "a", "dev-new-1", 100).allowed
    assert len({key for key in limiter.devices.windows if key[1] == "a"}) == 5  # four own buckets + overflow


def test_memory_is_bounded():
    limiter = RateLimiter(address_factor=2, clock=Clock(), max_keys=100)
    for n in range(5000):
        limiter.hit("browse", f"198.51.{n // 256}.{n % 256}", f"device-{n}", 10)
    assert len(limiter.addresses.windows) <= 100 and len(limiter.devices.windows) <= 100
    table = WindowTable(max_keys=2)
    for key in "abc":
        table.current(key, 0.0)
    assert list(table.windows) == ["b", "c"]


def test_admin_throttle_locks_out_one_client_for_the_window():
    clock = Clock()
    throttle = AdminThrottle(ClientResolver([]), failures_per_minute=2, clock=clock)
    guesser, curator = scope("192.0.2.1"), scope("192.0.2.2")
    throttle.failed(guesser)
    throttle.check(guesser)
    throttle.failed(guesser)
    with pytest.raises(ServiceError) as refused:
        throttle.check(guesser)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "60"
    throttle.check(curator)
    clock.now += 60
    throttle.check(guesser)


def test_device_and_app_key_headers():
    assert device_key(scope("1.2.3.4"), []) is None
    assert device_key(scope("1.2.3.4", x_device_id="phone-0001"), []) == "/phone-0001"
    assert device_key(scope("1.2.3.4", x_device_id="phone-0001"), ["k1"]) is None  # needs the app key
    assert device_key(scope("1.2.3.4", x_device_id="phone-0001", x_app_key="k1"), ["k1"]) == "k1/phone-0001"
    for bad in ("short", "x" * 65, "a b c d e f", "semi;colon1"):
        with pytest.raises(ServiceError, match="X-Device-Id"):
            device_key(scope("1.2.3.4", x_device_id=bad), [])
    with pytest.raises(ServiceError, match="X-App-Key"):
        device_key(scope("1.2.3.4", x_app_key="k2"), ["k1"])


@pytest.mark.parametrize("env", [{"ARTLENS_TRUSTED_PROXIES": "10.0.0.0/33"}, {"ARTLENS_FORWARDED_HEADER": "x-real-ip"},
                                 {"ARTLENS_BODY_TIMEOUT_S": "0"}, {"ARTLENS_MAX_CONNECTIONS": "0"},
                                 {"ARTLENS_RECOGNIZE_PER_MINUTE": "-1"}])
def test_bad_edge_settings_stop_the_server_with_one_line(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        load_settings(env)
