"""Who may call: keys checked against their hash, revoked and expired keys refused, auth on or off."""

from datetime import timedelta

import pytest

from app.config import Settings, is_loopback
from app.db.base import utcnow
from app.db.session import session_scope
from app.tenants import repository
from app.tenants.keys import generate_key, hash_key, key_matches
from tests.tenants.conftest import make_caller


def test_no_key_or_a_wrong_one_is_401_with_a_hint(auth_app, alice):
    missing = auth_app.get("/v1/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "compresso keys create --tenant NAME" in missing.json()["detail"]
    for bad in ("nonsense", alice.key[:-1] + ("A" if alice.key[-1] != "A" else "B"), "cpz_000000000000_" + "x" * 43):
        response = auth_app.get("/v1/models", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
    assert auth_app.get("/v1/models", headers=alice.headers).status_code == 200


def test_public_endpoints_need_no_key(auth_app):
    for path in ("/healthz", "/readyz", "/v1/techniques", "/openapi.json"):
        assert auth_app.get(path).status_code == 200, path


def test_a_revoked_key_stops_working_at_once(auth_app, alice):
    from app.tenants import service

    assert auth_app.get("/v1/jobs", headers=alice.headers).status_code == 200
    with session_scope() as session:
        service.revoke_key(session, alice.key_id)
    response = auth_app.get("/v1/jobs", headers=alice.headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_an_expired_key_is_refused(auth_app):
    caller = make_caller("carol", expires_in_days=1)
    assert auth_app.get("/v1/jobs", headers=caller.headers).status_code == 200
    with session_scope() as session:
        repository.get_key(session, caller.key_id).expires_at = utcnow() - timedelta(seconds=1)
    response = auth_app.get("/v1/jobs", headers=caller.headers)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_keys_are_stored_only_as_hashes_and_last_use_is_recorded(auth_app, alice):
    auth_app.get("/v1/jobs", headers=alice.headers)
    with session_scope() as session:
        stored = repository.get_key(session, alice.key_id)
        assert stored.key_hash == hash_key(alice.key)
        assert alice.key not in (stored.key_hash, stored.prefix, stored.name or "")
        assert stored.last_used_at is not None


def test_key_format_and_matching():
    first, second = generate_key(), generate_key()
    assert first.key != second.key and first.prefix != second.prefix
    assert key_matches(first.key, first.key_hash)
    assert not key_matches(second.key, first.key_hash)
    assert not key_matches(first.key, None)


@pytest.mark.parametrize(
    ("host", "required", "enabled"),
    [("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("127.0.0.1", True, True),
     ("0.0.0.0", False, True), ("192.168.1.10", False, True), ("example.org", False, True), ("::", False, True)],
)
def test_auth_is_off_only_on_loopback_without_auth_required(host, required, enabled):
    assert Settings(host=host, auth_required=required).auth_enabled is enabled
    assert is_loopback(host) is (host in ("127.0.0.1", "localhost", "::1"))


def test_with_auth_off_every_request_is_the_default_tenant(client, tiny_encoder_zip):  # noqa: F811
    from tests.app.conftest import upload

    model = upload(client, tiny_encoder_zip).json()
    with session_scope() as session:
        from app.models import repository as models_repository

        assert models_repository.get(session, model["id"]).tenant_id == "default"
