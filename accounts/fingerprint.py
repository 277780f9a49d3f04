"""Key fingerprints: tell two signing keys apart in logs without revealing either."""

from __future__ import annotations

import hashlib

FINGERPRINT_LENGTH = 12


def key_fingerprint(key: str) -> str:
    """Return a short, one-way fingerprint of a signing key (used as the JWT `kid`)."""
    return hashlib.sha256(b"taskhub-kid:" + key.encode()).hexdigest()[:FINGERPRINT_LENGTH]
