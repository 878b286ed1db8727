"""API key format, hashing and constant-time verification.

A key is `cpz_<prefix>_<secret>`: the prefix finds the row, the whole key is checked against a
SHA-256 hash. A fast hash is enough here (unlike for passwords): the secret is 256 random bits,
so there is nothing to guess, and a stolen hash cannot be reversed into a usable key.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"cpz_(?P<prefix>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})")
# Compared against when a key's prefix is unknown, so that case costs the same as a wrong secret.
_UNKNOWN_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    prefix: str
    key_hash: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"cpz_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=prefix, key_hash=hash_key(key))


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    match = KEY_PATTERN.fullmatch(key)
    return match["prefix"] if match else None


def key_matches(key: str, stored_hash: str | None) -> bool:
    """Constant time in the key's content: the comparison never stops at the first differing byte."""
    return hmac.compare_digest(hash_key(key), stored_hash or _UNKNOWN_HASH) and stored_hash is not None
