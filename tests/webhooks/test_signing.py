"""Signatures: HMAC-SHA256 of '<timestamp>.<body>', refused when tampered, re-signed or replayed late."""

from app.webhooks.signing import sign, verify
from app.webhooks.destinations import destination_problem, literal_private, url_problem

SECRET = "s3cret"
BODY = b'{"event":"job.succeeded"}'


def test_a_signature_verifies_only_for_its_body_secret_and_a_recent_time():
    now = 1_800_000_000
    signature = sign(SECRET, now, BODY)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(SECRET, str(now), BODY, signature, now=now + 10)
    assert not verify(SECRET, str(now), BODY + b" ", signature, now=now)  # tampered body
    assert not verify("other", str(now), BODY, signature, now=now)  # wrong secret
    assert not verify(SECRET, str(now + 1), BODY, signature, now=now)  # the timestamp is signed too
    assert not verify(SECRET, str(now), BODY, signature, now=now + 301)  # a replay, too late
    assert not verify(SECRET, "yesterday", BODY, signature, now=now)


def test_destinations():
    assert url_problem("ftp://example.org/x") and url_problem("https://user:pw@example.org/") and url_problem("http:///x")
    assert url_problem("https://example.org/hook") is None
    assert literal_private("http://127.0.0.1:9/x") and literal_private("http://[::1]/x")
    assert literal_private("http://169.254.169.254/latest/meta-data") and literal_private("http://10.0.0.5/")
    assert not literal_private("https://example.org/")
    assert "private address" in destination_problem("http://localhost:9/x", allow_private=False)
    assert destination_problem("http://localhost:9/x", allow_private=True) is None
