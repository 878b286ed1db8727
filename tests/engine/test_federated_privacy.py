"""Site-level differential privacy's mechanism (workers/engine/federated/privacy.py), on arrays: each site's
change is clipped to the norm, the average weighs sites equally, the noise has the std the guarantee needs,
and neither the noise nor any site moves what sites do not train or what earlier steps pruned."""

import numpy as np
import pytest

from workers.engine.federated.privacy import SitePrivacy

NAMES = ["dense", "pruned", "frozen"]


def arrays(dense, pruned, frozen) -> list[np.ndarray]:
    return [np.array(values, dtype=np.float32) for values in (dense, pruned, frozen)]


def test_each_site_s_change_is_clipped_then_the_sites_weigh_equally():
    privacy = SitePrivacy(noise_multiplier=1e-9, clipping_norm=1.0, delta=1e-5, trained={"dense", "pruned"},
                          masked={"pruned"})
    current = arrays([0, 0, 0, 0], [0, 1, 0, 1], [1, 1])
    sites = {
        # Norm 2 where it may change (the pruned zero it filled in and the frozen array do not count): halved.
        "north": arrays([2, 0, 0, 0], [5, 1, 0, 1], [9, 9]),
        # Norm 0.5 (0.3 and 0.4): kept as it is.
        "south": arrays([0, 0.3, 0, 0], [0, 1.4, 0, 1], [1, 1]),
    }
    result, round_privacy = privacy.aggregate(NAMES, current, sites)
    assert round_privacy.update_norms == pytest.approx({"north": 2.0, "south": 0.5})
    assert round_privacy.clipped == ["north"]
    np.testing.assert_allclose(result[0], [0.5, 0.15, 0, 0], atol=1e-6)
    np.testing.assert_allclose(result[1], [0, 1.2, 0, 1], atol=1e-6)
    assert result[1][0] == 0 and result[1][2] == 0  # the pruned zeros, exactly
    assert np.array_equal(result[2], current[2])  # the frozen array, untouched


def test_the_noise_has_the_std_of_the_guarantee_on_what_sites_train_only():
    privacy = SitePrivacy(noise_multiplier=1.5, clipping_norm=0.4, delta=1e-5, trained={"dense", "pruned"},
                          masked={"pruned"})
    size = 40_000
    pruned = np.zeros(size, dtype=np.float32)
    pruned[::2] = 1.0
    current = [np.zeros(size, dtype=np.float32), pruned, np.ones(size, dtype=np.float32)]
    # Three sites that changed nothing: what moves is the noise, std z x C on the sum, so z x C / 3 on the mean.
    result, round_privacy = privacy.aggregate(NAMES, current, {site: [a.copy() for a in current] for site in "abc"})
    assert round_privacy.noise_std == pytest.approx(1.5 * 0.4 / 3)
    assert float(result[0].std()) == pytest.approx(0.2, rel=0.03)
    assert float((result[1][::2] - 1).std()) == pytest.approx(0.2, rel=0.03)
    assert not result[1][1::2].any()
    assert np.array_equal(result[2], current[2])


def test_with_a_fixed_denominator_a_round_without_sites_moves_by_the_noise_alone():
    privacy = SitePrivacy(noise_multiplier=2.0, clipping_norm=0.3, delta=1e-5, trained={"dense", "pruned"},
                          masked={"pruned"}, site_sampling_rate=0.25)
    size = 40_000
    pruned = np.zeros(size, dtype=np.float32)
    pruned[::2] = 1.0
    current = [np.zeros(size, dtype=np.float32), pruned, np.ones(size, dtype=np.float32)]
    # Four sites listed, a quarter sampled on average: the sum's noise (std z x C = 0.6) over 1 expected site.
    result, round_privacy = privacy.aggregate(NAMES, current, {}, denominator=0.25 * 4)
    assert round_privacy.update_norms == {} and round_privacy.clipped == []
    assert round_privacy.noise_std == pytest.approx(0.6)
    assert float(result[0].std()) == pytest.approx(0.6, rel=0.03)
    assert not result[1][1::2].any() and np.array_equal(result[2], current[2])
    # One site's change, over the same fixed denominator: not over the one site that took part.
    quiet = SitePrivacy(noise_multiplier=1e-9, clipping_norm=1e3, delta=1e-5, trained={"dense", "pruned"},
                        masked={"pruned"})
    site = [current[0] + 1.0, current[1], current[2]]
    averaged, _ = quiet.aggregate(NAMES, current, {"north": site}, denominator=2.0)
    np.testing.assert_allclose(averaged[0], 0.5, atol=1e-4)
