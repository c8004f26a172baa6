"""QNetwork: shapes, parameter count, uint8 scaling, vmap over parameter sets."""
import jax
import jax.numpy as jnp
import numpy as np

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
