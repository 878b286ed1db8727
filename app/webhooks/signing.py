"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>" with the tenant's secret.

The timestamp is inside the signed message, so a receiver that rejects old timestamps (see
`verify`) cannot be fed a captured delivery again later. Receivers may copy `verify`: it needs only
the standard library.
"""

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Compresso-Signature"
TIMESTAMP_HEADER = "X-Compresso-Timestamp"
EVENT_HEADER = "X-Compresso-Event"
DELIVERY_HEADER = "X-Compresso-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `signature` is ours for this body and timestamp, and the timestamp is recent."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body), signature)
