"""What ``maskformer serve`` is told: where to listen, who may call, how requests are batched and bounded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


@dataclass
class ServeConfig:
    """Server settings.

    ``max_batch`` requests that arrive within ``batch_wait_ms`` of the first share one forward;
    ``max_queue`` requests may wait (more get 503 with Retry-After); a request body may hold
    ``max_request_mb`` MiB; a request not answered within ``timeout_s`` seconds gets 504. ``token``, when
    set, must come with every API request as ``Authorization: Bearer TOKEN``; it is required when ``host``
    is not a loopback address.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    max_queue: int = 64
    max_request_mb: float = 32.0
    timeout_s: float = 60.0
    token: str | None = None

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"--host {self.host} lets other machines call the server: give --token TOKEN (clients then send "
                "'Authorization: Bearer TOKEN'), or keep the default --host 127.0.0.1"
            )
        if self.max_batch < 1 or self.max_queue < 1:
            raise ValueError(f"--max-batch and --max-queue must be at least 1, got {self.max_batch}, {self.max_queue}")
        if self.batch_wait_ms < 0 or self.max_request_mb <= 0 or self.timeout_s <= 0:
            raise ValueError("--batch-wait-ms must be >= 0, --max-request-mb and --timeout positive")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: expected 0-65535")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)
