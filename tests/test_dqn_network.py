"""QNetwork: shapes, parameter count, uint8 scaling, vmap over parameter sets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import QNetwork


def test_output_shape_and_dtype():
    net = QNetwork(num_actions=6)
    obs = jnp.zeros((5, 128), jnp.uint8)
    params = net.init(jax.random.key(0), obs)
    q = net.apply(params, obs)
    assert q.shape == (5, 6) and q.dtype == jnp.float32


def test_parameter_count_of_seed_preset():
    # 128->256->256->6: (128*256 + 256) + (256*256 + 256) + (256*6 + 6)
    params = QNetwork(num_actions=6).init(jax.random.key(0), jnp.zeros((1, 128), jnp.uint8))
    count = sum(x.size for x in jax.tree.leaves(params))
    assert count == 128 * 256 + 256 + 256 * 256 + 256 + 256 * 6 + 6 == 100_358


def test_uint8_is_scaled_to_unit_interval():
    net = QNetwork(num_actions=3, hidden_sizes=(8,))
    raw = jax.random.randint(jax.random.key(1), (4, 128), 0, 256).astype(jnp.uint8)
    params = net.init(jax.random.key(0), raw)
    np.testing.assert_allclose(
        net.apply(params, raw), net.apply(params, raw.astype(jnp.float32) / 255.0), rtol=1e-6, atol=1e-6
    )


def test_vmap_over_two_parameter_sets():
    net = QNetwork(num_actions=4, hidden_sizes=(8, 8))
    obs = jnp.ones((3, 128), jnp.uint8)
    params = jax.vmap(lambda k: net.init(k, obs))(jax.random.split(jax.random.key(0), 2))
    q = jax.vmap(net.apply, in_axes=(0, None))(params, obs)
    assert q.shape == (2, 3, 4)
    assert not np.allclose(q[0], q[1])


def test_bits_encoding_unpacks_each_byte_msb_first():
    from jaxrl.dqn.network import unpack_bits

    obs = jnp.array([[0b10000001, 0b00000110] + [0] * 126], jnp.uint8)
    bits = unpack_bits(obs)
    assert bits.shape == (1, 1024) and bits.dtype == jnp.float32
    assert bits[0, :16].tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0]
    assert float(bits[0, 16:].sum()) == 0.0
    raw = jax.random.randint(jax.random.key(2), (3, 128), 0, 256).astype(jnp.uint8)
    np.testing.assert_array_equal(np.packbits(np.asarray(unpack_bits(raw), np.uint8), axis=-1), np.asarray(raw))


def test_bits_network_has_a_1024_wide_input_and_rejects_bad_encodings():
    net = QNetwork(num_actions=6, hidden_sizes=(256, 256), obs_encoding="bits")
    params = net.init(jax.random.key(0), jnp.zeros((1, 128), jnp.uint8))
    assert params["params"]["Dense_0"]["kernel"].shape == (1024, 256)
    with np.testing.assert_raises_regex(ValueError, "obs_encoding must be one of"):
        QNetwork(num_actions=6, obs_encoding="onehot").init(jax.random.key(0), jnp.zeros((1, 128), jnp.uint8))
    from jaxrl.dqn.config import DQNConfig

    with np.testing.assert_raises_regex(ValueError, "obs_encoding must be one of"):
        DQNConfig(obs_encoding="onehot")


def test_dueling_head_is_value_plus_centred_advantages():
    net = QNetwork(num_actions=5, hidden_sizes=(16,), dueling=True)
    obs = jax.random.randint(jax.random.key(4), (3, 128), 0, 256).astype(jnp.uint8)
    params = net.init(jax.random.key(0), obs)
    assert set(params["params"]) == {"Dense_0", "value", "advantage"}
    p = params["params"]
    hidden = jax.nn.relu(obs.astype(jnp.float32) / 255.0 @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    value = hidden @ p["value"]["kernel"] + p["value"]["bias"]
    advantage = hidden @ p["advantage"]["kernel"] + p["advantage"]["bias"]
    np.testing.assert_allclose(net.apply(params, obs), value + advantage - advantage.mean(-1, keepdims=True),
                               rtol=1e-5, atol=1e-5)


def test_layer_norm_normalises_each_hidden_layer_before_the_relu():
    net = QNetwork(num_actions=4, hidden_sizes=(16, 8), layer_norm=True)
    obs = jax.random.randint(jax.random.key(5), (3, 128), 0, 256).astype(jnp.uint8)
    params = net.init(jax.random.key(0), obs)
    p = params["params"]
    assert set(p) == {"Dense_0", "LayerNorm_0", "Dense_1", "LayerNorm_1", "Dense_2"}

    def layer_norm(x, ln):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
        return x * ln["scale"] + ln["bias"]

    x = obs.astype(jnp.float32) / 255.0
    for i in range(2):
        x = jax.nn.relu(layer_norm(x @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"], p[f"LayerNorm_{i}"]))
    np.testing.assert_allclose(net.apply(params, obs), x @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"],
                               rtol=1e-4, atol=1e-5)


def test_quantile_head_shapes_and_q_is_the_mean_of_the_quantiles():
    obs = jax.random.randint(jax.random.key(5), (3, 128), 0, 256).astype(jnp.uint8)
    for dueling in (False, True):
        net = QNetwork(num_actions=4, hidden_sizes=(16,), dueling=dueling, num_quantiles=7)
        params = net.init(jax.random.key(0), obs)
        dist = net.apply(params, obs, method=QNetwork.quantile_values)
        assert dist.shape == (3, 4, 7)
        np.testing.assert_allclose(net.apply(params, obs), dist.mean(-1), rtol=1e-6)
        if dueling:  # the advantage stream is centred over actions, for every quantile
            p = params["params"]
            hidden = jax.nn.relu(obs.astype(jnp.float32) / 255.0 @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
            value = (hidden @ p["value"]["kernel"] + p["value"]["bias"])[:, None, :]
            adv = (hidden @ p["advantage"]["kernel"] + p["advantage"]["bias"]).reshape(3, 4, 7)
            np.testing.assert_allclose(dist, value + adv - adv.mean(1, keepdims=True), rtol=1e-5, atol=1e-5)


def test_expected_value_head_keeps_its_parameters_with_a_quantile_axis_of_one():
    """num_quantiles=0 is DQN's head: same parameter tree as before QR-DQN existed (old checkpoints load)."""
    net = QNetwork(num_actions=6)
    params = net.init(jax.random.key(0), jnp.zeros((1, 128), jnp.uint8))
    shapes = jax.tree.map(jnp.shape, params["params"])
    assert shapes == {"Dense_0": {"kernel": (128, 256), "bias": (256,)},
                      "Dense_1": {"kernel": (256, 256), "bias": (256,)},
                      "Dense_2": {"kernel": (256, 6), "bias": (6,)}}
    obs = jnp.ones((2, 128), jnp.uint8)
    assert net.apply(params, obs, method=QNetwork.quantile_values).shape == (2, 6, 1)
    with np.testing.assert_raises_regex(ValueError, "num_quantiles"):
        QNetwork(num_actions=6, num_quantiles=-1).init(jax.random.key(0), obs)


def test_patch_conv_equals_flax_conv_with_the_same_parameters():
    import flax.linen as nn
    import pytest

    from jaxrl.dqn.network import PatchConv

    for shape, kernel_size, strides in [((2, 19, 20, 6), 3, 2), ((3, 10, 10, 16), 3, 2), ((1, 7, 5, 2), 3, 1),
                                        ((2, 9, 8, 3), 5, 3)]:
        x = jax.random.normal(jax.random.key(shape[1]), shape)
        conv = nn.Conv(4, (kernel_size, kernel_size), strides=strides, padding="SAME")
        params = conv.init(jax.random.key(1), x)
        params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias too
        patch = PatchConv(4, kernel_size=kernel_size, strides=strides)
        assert jax.tree.map(jnp.shape, patch.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
        expected = jax.jit(conv.apply)(params, x)
        got = jax.jit(patch.apply)(params, x)
        assert got.shape == expected.shape, (shape, kernel_size, strides)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception):
        PatchConv(4).init(jax.random.key(0), jnp.zeros((19, 20, 6)))  # no batch axis


def test_planes_torso_keeps_the_conv_parameter_names():
    net = QNetwork(num_actions=6, obs_encoding="planes", conv_channels=(16, 32))
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 256), jnp.uint8))["params"]
    assert params["Conv_0"]["kernel"].shape == (3, 3, 6, 16) and params["Conv_1"]["kernel"].shape == (3, 3, 16, 32)
    assert params["Dense_0"]["kernel"].shape == (5 * 5 * 32, 256)


def test_conv_strides_and_conv_layer_norm_shape_the_planes_torso():
    # stride 1 keeps the 19 x 20 grid, the next two halve it: 19 x 20 -> 19 x 20 -> 10 x 10 -> 5 x 5
    net = QNetwork(num_actions=6, obs_encoding="planes", conv_channels=(8, 16, 16), conv_strides=(1, 2, 2),
                   conv_layer_norm=True, hidden_sizes=(32,))
    obs = np.random.default_rng(0).integers(0, 256, (3, 256), dtype=np.uint8)
    params = jax.jit(net.init)(jax.random.key(0), obs[:1])["params"]
    assert [params[f"Conv_{i}"]["kernel"].shape for i in range(3)] == [(3, 3, 6, 8), (3, 3, 8, 16), (3, 3, 16, 16)]
    # one scale and bias per grid cell and channel, as torch's LayerNorm([C, H, W]) in CleanRL's PQN network
    assert params["ConvLayerNorm_0"]["scale"].shape == (19, 20, 8)
    assert params["ConvLayerNorm_2"]["bias"].shape == (5, 5, 16)
    assert params["Dense_0"]["kernel"].shape == (5 * 5 * 16, 32)
    q = jax.jit(net.apply)({"params": params}, obs)
    assert q.shape == (3, 6) and np.all(np.isfinite(q))
    # the normalised pre-activations: zero mean and unit variance over each sample's cells and channels
    _, state = net.apply({"params": params}, obs, capture_intermediates=True)
    normed = state["intermediates"]["ConvLayerNorm_0"]["__call__"][0]
    np.testing.assert_allclose(normed.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(normed.std(axis=(1, 2, 3)), 1.0, rtol=1e-2)
    with pytest.raises(ValueError, match="one stride per convolution"):
        QNetwork(num_actions=6, obs_encoding="planes", conv_strides=(1,)).init(jax.random.key(0), obs[:1])


def test_config_needs_one_conv_stride_per_convolution():
    from jaxrl.dqn.config import DQNConfig

    with pytest.raises(ValueError, match="one stride per convolution"):
        DQNConfig(conv_channels=(16, 32, 32))
    config = DQNConfig(obs_encoding="planes", frame_stack=2, conv_channels=[8, 16, 16], conv_strides=[1, 2, 2],
                       conv_layer_norm=True)
    assert config.conv_strides == (1, 2, 2) and DQNConfig.from_json(config.to_json()) == config
    old = config.to_dict()
    del old["conv_strides"], old["conv_layer_norm"], old["conv_channels"]  # a config.json from before the fields
    assert DQNConfig.from_dict(old).conv_strides == (2, 2) and not DQNConfig.from_dict(old).conv_layer_norm
