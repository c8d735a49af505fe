"""Request rate limits and the admin-authentication throttle: fair behind a NAT, not fooled by forged headers.

The client is the TCP peer, or for a trusted proxy the right-most untrusted address of its forwarding header
(:class:`ClientResolver`); devices behind one address are told apart by ``X-Device-Id`` in nested buckets, so
made-up ids never buy an address more than its own bucket. The rules are in docs/service.md ("Behind a proxy").
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import TYPE_CHECKING

from .errors import ServiceError

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from .settings import Settings

PERIOD_S = 60.0
MAX_KEYS = 100_000  # per table: ~20 MB at worst
DEVICES_PER_ADDRESS_FACTOR = 4  # distinct device tokens per address and minute, as a multiple of the factor
DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_ANONYMOUS, _OVERFLOW = "", "*"
IPAddress = IPv4Address | IPv6Address


def _parse_ip(value: str) -> IPAddress | None:
    """An address from a peer or forwarding-header value (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), else None."""
    value = value.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return ip_address(value)
    except ValueError:
        return None


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, in order."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, found = pair.partition("=")
            if name.strip().lower() == "for":
                hops.append(found)
    return hops


class ClientResolver:
    def __init__(self, trusted_proxies: list[str], forwarded_header: str = "x-forwarded-for") -> None:
        self.networks = [ip_network(proxy, strict=False) for proxy in trusted_proxies]
        self.header = forwarded_header.encode()

    def _trusted(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.networks)

    def _hops(self, scope: Scope) -> list[str]:
        values = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == self.header]
        if self.header == b"forwarded":
            return [hop for value in values for hop in _forwarded_for(value)]
        return [hop for value in values for hop in value.split(",")]

    def address(self, scope: Scope) -> str:
        """The client's key: its address (IPv6: the /64), seen through trusted proxies only."""
        peer = str((scope.get("client") or ("unknown",))[0])
        ip = _parse_ip(peer)
        if ip is None:
            return peer[:64]  # not a socket address (an in-process test client)
        if self.networks and self._trusted(ip):
            for hop in reversed(self._hops(scope)):
                hop_ip = _parse_ip(hop)
                if hop_ip is not None and not self._trusted(hop_ip):
                    ip = hop_ip
                    break
        if isinstance(ip, IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ip_network(f"{ip}/64", strict=False))
        return str(ip)


class _Window:
    __slots__ = ("count", "devices", "ends")

    def __init__(self, ends: float) -> None:
        self.ends, self.count, self.devices = ends, 0, 0


class WindowTable:
    """Fixed windows per key, at most ``max_keys`` of them (least recently used dropped first)."""

    def __init__(self, max_keys: int = MAX_KEYS, period_s: float = PERIOD_S) -> None:
        self.windows: OrderedDict[Hashable, _Window] = OrderedDict()
        self.max_keys, self.period_s = max_keys, period_s

    def peek(self, key: Hashable, now: float) -> _Window | None:
        window = self.windows.get(key)
        return window if window is not None and window.ends > now else None

    def current(self, key: Hashable, now: float) -> _Window:
        window = self.peek(key, now)
        if window is None:
            window = self.windows[key] = _Window(now + self.period_s)
        self.windows.move_to_end(key)
        while len(self.windows) > self.max_keys:
            self.windows.popitem(last=False)
        return window


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset_s)}


class RateLimiter:
    def __init__(self, address_factor: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self.address_factor = address_factor
        self.max_devices = DEVICES_PER_ADDRESS_FACTOR * address_factor
        self.clock = clock
        self.addresses, self.devices = WindowTable(max_keys), WindowTable(max_keys)

    def hit(self, bucket: str, address: str, device: str | None, limit: int) -> Verdict:
        """Count one request in ``bucket`` if both the device's and the address's windows allow it."""
        now = self.clock()
        at_address = self.addresses.current((bucket, address), now)
        device = device or _ANONYMOUS
        if device != _ANONYMOUS and self.devices.peek((bucket, address, device), now) is None:
            if at_address.devices >= self.max_devices:
                device = _OVERFLOW
            else:
                at_address.devices += 1
        own = self.devices.current((bucket, address, device), now)
        address_limit = limit * self.address_factor
        allowed = own.count < limit and at_address.count < address_limit
        if allowed:
            own.count += 1
            at_address.count += 1
        own_left, address_left = limit - own.count, address_limit - at_address.count
        binding = own if own_left <= address_left else at_address
        return Verdict(allowed, limit, max(0, min(own_left, address_left)), math.ceil(binding.ends - now))


class AdminThrottle:
    """Failed admin authentications per client: past ``failures_per_minute`` the client's admin requests are
    refused (429, even with the right key: no oracle) until its window ends. Other clients are unaffected."""

    def __init__(self, resolver: ClientResolver, failures_per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver, self.limit, self.clock = resolver, failures_per_minute, clock
        self.failures = WindowTable()

    def check(self, scope: Scope) -> None:
        if self.limit <= 0:
            return
        now = self.clock()
        window = self.failures.peek(self.resolver.address(scope), now)
        if window is not None and window.count >= self.limit:
            wait = math.ceil(window.ends - now)
            raise ServiceError("rate_limited", f"too many failed admin authentications from this client; retry in"
                                               f" {wait} s", 429, {"Retry-After": str(wait)})

    def failed(self, scope: Scope) -> None:
        if self.limit > 0:
            self.failures.current(self.resolver.address(scope), self.clock()).count += 1


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers") or [] if k == name), None)


def device_key(scope: Scope, app_keys: list[str]) -> str | None:
    """``app key/device id`` from the headers, None when anonymous; a malformed or unknown one is a 4xx."""
    device = _header(scope, b"x-device-id")
    app_key = _header(scope, b"x-app-key")
    if device is not None and not DEVICE_ID.match(device):
        raise ServiceError("invalid_parameter", "X-Device-Id must be 8–64 characters from A–Z a–z 0–9 _ -", 400)
    if app_keys and app_key is not None and app_key not in app_keys:
        raise ServiceError("unauthorized", "X-App-Key is not one of this server's app keys", 401)
    if device is None or (app_keys and app_key is None):
        return None  # with app keys configured, a device token counts only with a known app key
    return f"{app_key or ''}/{device}"


def rate_limit_middleware(settings: Settings, limiter: RateLimiter,
                          resolver: ClientResolver) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar middleware (runs after routing): limits the routes whose ``opt`` says ``rate_limited``."""
    limits = {"recognize": settings.recognize_per_minute, "browse": settings.rate_limit_per_minute}
    names = {"recognize": "recognition requests", "browse": "browsing requests"}

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            handler = scope.get("route_handler")
            if scope["type"] != "http" or handler is None or not handler.opt.get("rate_limited"):
                await app(scope, receive, send)
                return
            bucket = "recognize" if scope["method"] == "POST" else "browse"
            limit = limits[bucket] if settings.rate_limit_per_minute > 0 else 0
            if limit <= 0:
                await app(scope, receive, send)
                return
            verdict = limiter.hit(bucket, resolver.address(scope), device_key(scope, settings.app_keys), limit)
            headers = verdict.headers()
            if not verdict.allowed:
                raise ServiceError(
                    "rate_limited", f"too many {names[bucket]} from this client ({limit} a minute each; one address"
                    f" {limit * limiter.address_factor}); retry in {verdict.reset_s} s. Apps: send X-Device-Id so"
                    " that devices sharing an address are counted apart", 429,
                    {**headers, "Retry-After": str(verdict.reset_s)})
            encoded = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), *encoded]
                await send(message)

            await app(scope, receive, send_with_headers)

        return middleware

    return factory
