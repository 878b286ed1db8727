"""Half-precision transfer (workers/engine/federated/transfer.py), on arrays: the weights go out in float16,
the changes come back in float16 and are added to the coordinator's float32 copy; an array float16 cannot
hold travels in float32, so that no site ever sees an inf or sends back a nan."""

import numpy as np

from workers.engine.federated.transfer import outgoing, site_reply, site_weights


def test_changes_travel_in_half_precision_and_land_on_the_float32_weights():
    current = [np.array([0.1234567, -0.5, 0.0], dtype=np.float32)]
    sent = outgoing(current, "float16")
    assert sent[0].dtype == np.float16 and sent[0].nbytes == current[0].nbytes // 2
    trained = [sent[0].astype(np.float32) + np.array([0.001, -0.002, 0.0], dtype=np.float32)]
    reply = site_reply(trained, sent, "float16")
    assert reply[0].dtype == np.float16
    result = site_weights(reply, current, "float16")
    # The change is added to the exact float32 weights, not to their half-precision copy.
    np.testing.assert_allclose(result[0], current[0] + np.array([0.001, -0.002, 0.0]), atol=2e-6)
    assert result[0][2] == 0.0


def test_an_array_beyond_float16_s_range_travels_in_float32_and_stays_finite():
    mask = np.array([0.0, -1e9], dtype=np.float32)  # a buffer's sentinel, as some attention masks hold
    weights = np.array([0.25, 0.5], dtype=np.float32)
    sent = outgoing([mask, weights], "float16")
    assert sent[0].dtype == np.float32 and sent[1].dtype == np.float16
    trained = [sent[0].copy(), sent[1].astype(np.float32) + np.float32(0.01)]
    reply = site_reply(trained, sent, "float16")
    assert reply[0].dtype == np.float32 and reply[1].dtype == np.float16
    result = site_weights(reply, [mask, weights], "float16")
    assert np.array_equal(result[0], mask)
    np.testing.assert_allclose(result[1], weights + 0.01, atol=1e-5)
    assert all(np.isfinite(array).all() for array in result)


def test_float32_transfer_sends_the_weights_themselves():
    current = [np.array([1.0, 2.0], dtype=np.float32)]
    assert outgoing(current, "float32") is current
    trained = [np.array([1.5, 2.5], dtype=np.float32)]
    assert site_reply(trained, current, "float32") is trained
    assert site_weights(trained, current, "float32") is trained
