"""A site's worker that requires TLS takes no part in a plain-gRPC run, and says why; its settings refuse a
certificate without its key or its authority."""

import pytest
from pydantic import ValidationError

from app.config import Settings, get_settings
from workers.tasks.federated_site import federated_site

REQUEST = {
    "job_id": "job-1", "site": "clinic-a", "address": "coordinator.internal:41000", "token": "t" * 32, "tls": False,
    "task": "feature-extraction", "dataset": {"id": "d1", "sha256": "0" * 64, "filename": "notes.jsonl"},
    "model_key": "models/m1", "connect_timeout_s": 30, "run_timeout_s": 60,
}


@pytest.fixture
def require_tls(monkeypatch):
    monkeypatch.setenv("COMPRESSO_FEDERATED_REQUIRE_TLS", "true")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_site_that_requires_tls_refuses_a_plain_run(require_tls):
    result = federated_site.run(REQUEST)
    assert result["status"] == "refused"
    assert "coordinator.internal:41000" in result["reason"] and "COMPRESSO_FEDERATED_REQUIRE_TLS" in result["reason"]


def test_a_site_that_does_not_require_tls_goes_on_to_its_dataset():
    # No copy of the dataset at this site: the next check refuses, so the TLS check let it through.
    result = federated_site.run(REQUEST)
    assert result["status"] == "refused" and "is not at this site" in result["reason"]


def test_the_coordinator_s_certificate_needs_its_key_and_authority(tmp_path):
    cert = tmp_path / "coordinator.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValidationError, match="go together"):
        Settings(federated_tls_cert=cert)
    with pytest.raises(ValidationError, match="needs COMPRESSO_FEDERATED_TLS_CA"):
        Settings(federated_tls_cert=cert, federated_tls_key=cert)
    with pytest.raises(ValidationError, match="federated_tls_cert\n  Path does not point to a file"):
        Settings(federated_tls_cert=tmp_path / "missing.pem", federated_tls_key=cert, federated_tls_ca=cert)
