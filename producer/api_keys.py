"""API keys: which tenant a bearer key acts for, read from the settings (README "Security").

Entries, in CHATLANE_API_KEYS (comma-separated) and CHATLANE_API_KEYS_FILE (one per line):

- ``tenant=KEY``: KEY acts for ``tenant``;
- ``tenant=sha256:<64 hex>``: the same, stored as the key's SHA-256 (``printf %s KEY | sha256sum``);
- ``KEY`` or ``sha256:<64 hex>`` alone: tenant ``default`` (the configuration from before tenants).

A file line may add the tenant's quota overrides after the entry (``max_queued=100
turns_per_min=60``, the fields of TenantQuota). CHATLANE_ADMIN_KEYS holds ``KEY`` or
``sha256:<hex>`` entries that may act for any tenant (api_guards.TenantAuth reads the tenant from
the X-Chatlane-Tenant header).

Only digests are kept. Every mistake is an ApiKeysError whose one-line message names the setting
and the entry or line, never the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatlane.settings import Settings
from chatlane.tenants import DEFAULT_TENANT, TENANT_PATTERN, TenantQuota

HASH_PREFIX = "sha256:"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TENANT_RE = re.compile(TENANT_PATTERN)
QUOTA_FIELDS = tuple(f.name for f in dataclasses.fields(TenantQuota))


class ApiKeysError(ValueError):
    """The key settings are wrong; the message is one line that says where and how."""


@dataclass(frozen=True)
class Grant:
    """What a key may do: act for ``tenant``, or (an admin key, tenant None) for any tenant it names."""

    digest: bytes = field(repr=False)
    tenant: str | None

    @property
    def admin(self) -> bool:
        return self.tenant is None


@dataclass(frozen=True)
class KeyRing:
    """The configured keys as SHA-256 digests, and the quota overrides of the key file."""

    grants: Mapping[bytes, Grant] = field(default_factory=dict)
    quotas: Mapping[str, TenantQuota] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.grants)

    def grant(self, supplied: bytes) -> Grant | None:
        """The grant of the key ``supplied`` (its bytes as sent), or None."""
        digest = hashlib.sha256(supplied).digest()
        # The lookup compares digests, never keys: its timing can depend only on sha256(supplied),
        # which tells a caller nothing about any configured key; so it scales to any number of
        # keys. compare_digest confirms the match without an early exit.
        found = self.grants.get(digest)
        return found if found is not None and hmac.compare_digest(found.digest, digest) else None


def load_keyring(settings: Settings) -> KeyRing | None:
    """Parses CHATLANE_API_KEYS, CHATLANE_API_KEYS_FILE and CHATLANE_ADMIN_KEYS; raises ApiKeysError.

    None with CHATLANE_AUTH=none (no auth). An empty KeyRing: auth on, no keys, every request refused.
    """
    configured = [
        name
        for name, value in (
            ("CHATLANE_API_KEYS", settings.api_keys.get_secret_value().strip()),
            ("CHATLANE_API_KEYS_FILE", settings.api_keys_file),
            ("CHATLANE_ADMIN_KEYS", settings.admin_keys.get_secret_value().strip()),
        )
        if value
    ]
    if settings.auth == "none":
        if configured:
            # Keys that protect nothing are a mistake an operator should hear about now.
            raise ApiKeysError(f"CHATLANE_AUTH=none turns auth off, but {' and '.join(configured)} is set: unset one")
        return None
    builder = _Builder()
    for where, entry in _split(settings.api_keys.get_secret_value(), "CHATLANE_API_KEYS"):
        builder.add(where, *_tenant_entry(where, entry))
    if settings.api_keys_file:
        for where, entry, options in _file_lines(settings.api_keys_file):
            tenant, digest = _tenant_entry(where, entry)
            builder.add(where, tenant, digest)
            builder.quota(where, tenant, options)
    for where, entry in _split(settings.admin_keys.get_secret_value(), "CHATLANE_ADMIN_KEYS"):
        builder.add(where, None, _digest(where, entry))
    return KeyRing(dict(builder.grants), dict(builder.quotas))


class _Builder:
    def __init__(self) -> None:
        self.grants: dict[bytes, Grant] = {}
        self.first_seen: dict[bytes, str] = {}
        self.quotas: dict[str, TenantQuota] = {}
        self.quota_set_at: dict[tuple[str, str], str] = {}

    def add(self, where: str, tenant: str | None, digest: bytes) -> None:
        if digest in self.grants:
            # One key for two tenants would make the tenant depend on the order of the entries.
            raise ApiKeysError(f"{where}: the same key as {self.first_seen[digest]} (each key must appear once)")
        self.grants[digest] = Grant(digest, tenant)
        self.first_seen[digest] = where

    def quota(self, where: str, tenant: str, options: list[str]) -> None:
        values: dict[str, int] = {}
        for n, option in enumerate(options, 2):
            name, sep, raw = option.partition("=")
            if not sep or name not in QUOTA_FIELDS:
                # Not echoed: a misplaced key would land in the log.
                expected = ", ".join(f"{f}=N" for f in QUOTA_FIELDS)
                raise ApiKeysError(f"{where}: word {n} is not a quota; expected {expected}")
            if name in values:
                raise ApiKeysError(f"{where}: {name} is given twice")
            if not (raw.isascii() and raw.isdigit()):
                raise ApiKeysError(f"{where}: {name} must be a whole number >= 0 (0: no limit), got {raw!r:.20}")
            values[name] = int(raw)
        if not values:
            return
        current = dataclasses.asdict(self.quotas.get(tenant, TenantQuota()))
        for name, value in values.items():
            earlier = self.quota_set_at.get((tenant, name))
            if earlier is not None and current[name] != value:
                raise ApiKeysError(f"{where}: {name} of tenant {tenant} differs from {earlier}")
            current[name] = value
            self.quota_set_at[(tenant, name)] = where
        self.quotas[tenant] = TenantQuota(**current)


def _split(value: str, setting: str) -> Iterator[tuple[str, str]]:
    # Empty entries (a trailing comma) are skipped, as they always were.
    for n, entry in enumerate((e.strip() for e in value.split(",")), 1):
        if entry:
            yield f"{setting} entry {n}", entry


def _file_lines(path: str) -> Iterator[tuple[str, str, list[str]]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ApiKeysError(f"CHATLANE_API_KEYS_FILE: cannot read {path}: {reason}") from None
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        # A comment starts a line or follows whitespace: '#' inside a key is part of the key.
        for i, word in enumerate(words):
            if word.startswith("#"):
                del words[i:]
                break
        if words:
            yield f"CHATLANE_API_KEYS_FILE {path} line {n}", words[0], words[1:]


def _tenant_entry(where: str, entry: str) -> tuple[str, bytes]:
    tenant, sep, secret = entry.partition("=")
    if not sep:
        return DEFAULT_TENANT, _digest(where, entry)
    if not _TENANT_RE.fullmatch(tenant):
        # The text before '=' may be part of a bare key: say what is wrong without echoing it.
        raise ApiKeysError(
            f"{where}: the text before '=' is not a tenant name ({TENANT_PATTERN}); a bare key that contains "
            f"'=' is written {DEFAULT_TENANT}=KEY"
        )
    return tenant, _digest(where, secret)


def _digest(where: str, secret: str) -> bytes:
    if secret.startswith(HASH_PREFIX):
        hexdigits = secret[len(HASH_PREFIX) :]
        if not _HEX64.fullmatch(hexdigits):
            raise ApiKeysError(
                f"{where}: {HASH_PREFIX} must be followed by 64 hex digits (printf %s KEY | sha256sum), "
                f"got {len(hexdigits)} characters"
            )
        return bytes.fromhex(hexdigits)
    if not secret:
        raise ApiKeysError(f"{where}: the key is empty")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in secret):
        raise ApiKeysError(f"{where}: a key may not contain whitespace or control characters")
    return hashlib.sha256(secret.encode("utf-8")).digest()
