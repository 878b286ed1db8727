"""The federated step over TLS: Flower's coordinator presents a certificate that a test authority signed,
sites that trust that authority train through it, and a site that trusts another authority cannot connect."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.engine.test_federated import FAST, damaged_state, write_site_datasets
from tests.tls_certificates import write_tls_files
from workers.engine.errors import EngineUserError
from workers.engine.federated.config import FederatedConfig, FederationSettings
from workers.engine.federated.handler import apply_federated
from workers.engine.federated.local_sites import LocalSites
from workers.engine.loading import load_tokenizer
from workers.engine.state import StepContext

pytestmark = pytest.mark.usefixtures("one_thread")

TWO_SITES = {"sites": [{"site": "north", "dataset_id": "d1"}, {"site": "south", "dataset_id": "d2"}], "rounds": 1}


@pytest.fixture
def site_datasets(tmp_path) -> dict[str, Path]:
    return write_site_datasets(tmp_path)


@pytest.fixture
def tls_files(tmp_path) -> dict[str, Path]:
    return write_tls_files(tmp_path / "tls")


def run_tls_step(params: dict, tiny_models, tmp_path, datasets: dict[str, Path], trusted: dict[str, Path],
                 tls_files: dict[str, Path]):
    model_dir = tiny_models["encoder"]
    sites = LocalSites(tmp_path / "sites", model_dir, datasets, tls_ca=trusted)
    federation = FederationSettings(tls_cert=str(tls_files["cert"]), tls_key=str(tls_files["key"]),
                                    tls_ca=str(tls_files["ca"]))
    context = StepContext(work_dir=tmp_path / "step", device="cpu", tokenizer=load_tokenizer(model_dir),
                          sequence_length=32, announce=sites, federation=federation)
    context.work_dir.mkdir(parents=True)
    try:
        return apply_federated(FederatedConfig(**{**FAST, **params}), damaged_state(model_dir), context), context, sites
    finally:
        sites.stop()


def test_sites_that_trust_the_coordinator_s_authority_train_over_tls(tiny_models, tmp_path, site_datasets,
                                                                     tls_files):
    trusted = {"north": tls_files["ca"], "south": tls_files["ca"]}
    _, context, sites = run_tls_step(TWO_SITES, tiny_models, tmp_path, site_datasets, trusted, tls_files)
    assert sites.announcements[0]["tls"] is True
    assert context.details["rounds_completed"] == 1 and context.details["sites_in_last_round"] == ["north", "south"]
    for site in ("north", "south"):
        connecting = next(event for event in sites.events[site] if event["event"] == "connecting")
        assert connecting["tls"] is True
        assert [event["round"] for event in sites.events[site] if event["event"] == "round"] == [1]


def test_a_site_that_trusts_another_authority_never_connects(tiny_models, tmp_path, site_datasets, tls_files):
    params = {**TWO_SITES, "connect_timeout_s": 20}
    trusted = {"north": tls_files["ca"], "south": tls_files["other_ca"]}
    with pytest.raises(EngineUserError, match=r"1 of 2 sites connected within 20 s \(south did not\)"):
        run_tls_step(params, tiny_models, tmp_path, site_datasets, trusted, tls_files)
    log = (tmp_path / "sites" / "site-south.log").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log.lower(), log[-2000:]


def test_tls_needs_the_certificate_its_key_and_the_authority():
    with pytest.raises(ValidationError, match="all three"):
        FederationSettings(tls_cert="coordinator.pem", tls_key="coordinator.key")
    assert FederationSettings().tls is False
