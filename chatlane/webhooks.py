"""Webhook URLs: what a caller may name (checked at enqueue and again before each delivery)."""

from __future__ import annotations

from urllib.parse import urlsplit

from chatlane.errors import WebhookNotAllowed

MAX_URL_CHARS = 2048


def allowed_hosts(setting: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in setting.split(",") if h.strip())


def check_webhook_url(url: str, allow: tuple[str, ...]) -> str:
    """``url`` if it is an http(s) URL whose host is allowed; else WebhookNotAllowed (nothing written)."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise WebhookNotAllowed(f"webhook_url must be a URL of at most {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise WebhookNotAllowed("webhook_url must be an http(s) URL with a host and no credentials")
    if not any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allow):
        raise WebhookNotAllowed(
            f"webhook host {host!r} is not in CHATLANE_WEBHOOK_ALLOW_HOSTS"
            + ("" if allow else " (empty: no webhook host is allowed)")
        )
    return url
