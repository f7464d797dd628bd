"""Tenant names and API keys.

    key = token_urlsafe(32)   (32 random bytes, shown once)        stored: sha256(key) as hex

Only the hash is stored, so a copy of the registry database does not hand out working keys; a presented key is
hashed and found by its hash, and the stored hash is compared with `hmac.compare_digest`. Tenant and prompt names
are short plain identifiers, so they can never be confused with the `/` and `@` of a prompt reference.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_CHARS = 256  # a real key is 43 characters; anything far longer is refused before hashing


def check_name(value: object, what: str) -> str:
    """A tenant or prompt name: 1-64 characters of letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid {what} name {value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key against a stored hash."""
    return hmac.compare_digest(hash_key(key), stored_hash)
