"""DQN losses and targets for ONE transition (rlax style): batch them with `jax.vmap`.

Arguments follow rlax's names: ``q_tm1`` / ``a_tm1`` at the earlier step, ``r_t`` / ``discount_t`` / ``q_t`` at the
later one; every target stops the gradient. `jaxrl.dqn.agent` applies the network and vmaps these over a batch.

References:
  Mnih et al., 2015, "Human-level control through deep reinforcement learning" (DQN, target network, Huber loss).
  van Hasselt et al., 2016, "Deep Reinforcement Learning with Double Q-learning" (double DQN).
  Vieillard et al., 2020, "Munchausen Reinforcement Learning" (Munchausen-DQN).
  Dabney et al., 2018, "Distributional Reinforcement Learning with Quantile Regression" (QR-DQN).

    errors = jax.vmap(td_error)(q_tm1, a_tm1, r_t, discount_t, q_t_target)   # [B, A], [B], ... -> [B]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of x [B] over the rows where valid [B] (0 rows: 0)."""
    weight = valid.astype(jnp.float32)
    return jnp.sum(x * weight) / jnp.maximum(weight.sum(), 1.0)


def td_error(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    q_t_online: jax.Array | None = None,
) -> jax.Array:
    """The one-step Q-learning TD error ``target - q_tm1[a_tm1]`` for ONE transition (batch with `jax.vmap`).

    target = r_t + discount_t * max_a q_t_target[a]                          (DQN)
    target = r_t + discount_t * q_t_target[argmax_a q_t_online[a]]           (double DQN, when q_t_online given)
    with the gradient stopped through the target.

    Args:
      q_tm1: [A] online Q-values at o_tm1.
      a_tm1: () int action taken at o_tm1.
      r_t: () reward.
      discount_t: () gamma * (1 - terminated_t): 0 at a true terminal, gamma otherwise (also on truncation).
      q_t_target: [A] target-network Q-values at o_t.
      q_t_online: [A] online Q-values at o_t for double DQN, or None.

    Returns:
      () TD error.
    """
    assert q_tm1.ndim == 1 and q_t_target.shape == q_tm1.shape, (q_tm1.shape, q_t_target.shape)
    assert jnp.ndim(a_tm1) == 0 and jnp.ndim(r_t) == 0 and jnp.ndim(discount_t) == 0
    if q_t_online is None:
        v_t = jnp.max(q_t_target)
    else:
        assert q_t_online.shape == q_t_target.shape, (q_t_online.shape, q_t_target.shape)
        v_t = q_t_target[jnp.argmax(q_t_online)]
    target_tm1 = jax.lax.stop_gradient(r_t + discount_t * v_t)
    return target_tm1 - q_tm1[a_tm1]


def td_loss(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    q_t_online: jax.Array | None = None,
    huber_delta: float = 1.0,
) -> jax.Array:
    """Huber loss of the one-step Q-learning TD error (`td_error`), for ONE transition (batch with `jax.vmap`).

    loss = huber(target - q_tm1[a_tm1], delta), arguments as `td_error`; huber_delta 1.0 is smooth L1.

    Returns:
      () loss.
    """
    return optax.losses.huber_loss(td_error(q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online),
                                   delta=huber_delta)


MUNCHAUSEN_LOG_POLICY_CLIP = -1.0  # l_0 of Vieillard et al. (2020): the log-policy bonus is clipped to [l_0, 0]


def munchausen_target(
    q_tm1_target: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    *,
    temperature: float,
    alpha: float,
) -> jax.Array:
    """Munchausen-DQN target for ONE transition (Vieillard et al., 2020, "Munchausen Reinforcement Learning").

    With the target network's softmax policy ``pi = softmax(q / temperature)``:

        target = r_t + alpha * temperature * clip(log pi(a_tm1 | o_tm1), l_0, 0)
                     + discount_t * sum_a pi(a | o_t) * (q_t_target[a] - temperature * log pi(a | o_t))

    The bonus adds the scaled log-probability of the action taken (an implicit KL penalty between successive
    policies, which widens the gaps between action values); the bootstrap is the soft (entropy-regularised)
    value. ``temperature`` is in (stored) reward units and sets how greedy the softmax policy is next to the
    gaps between action values (the paper: 0.03 for rewards clipped to [-1, 1]).

    Args:
      q_tm1_target: [A] target-network Q-values at o_tm1.
      a_tm1: () int action taken at o_tm1.
      r_t: () reward.
      discount_t: () bootstrap factor (0 at a terminal).
      q_t_target: [A] target-network Q-values at o_t.
      temperature: tau > 0 of the softmax policy.
      alpha: weight of the log-policy bonus in [0, 1] (0: soft DQN).

    Returns:
      () target, gradient stopped.
    """
    log_pi_tm1 = jax.nn.log_softmax(q_tm1_target / temperature)[a_tm1]
    log_pi_t = jax.nn.log_softmax(q_t_target / temperature)  # [A]
    soft_v_t = jnp.sum(jnp.exp(log_pi_t) * (q_t_target - temperature * log_pi_t))
    bonus = alpha * temperature * jnp.clip(log_pi_tm1, MUNCHAUSEN_LOG_POLICY_CLIP, 0.0)
    return jax.lax.stop_gradient(r_t + bonus + discount_t * soft_v_t)


def quantile_midpoints(num_quantiles: int) -> jax.Array:
    """[N] quantile levels (2i + 1) / 2N, i = 0..N-1, that QR-DQN's N values estimate."""
    return (jnp.arange(num_quantiles, dtype=jnp.float32) + 0.5) / num_quantiles


def quantile_td_loss(
    dist_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    dist_t_target: jax.Array,
    q_t_selector: jax.Array,
    huber_delta: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """QR-DQN's quantile Huber loss for ONE transition (Dabney et al., 2018; batch with `jax.vmap`).

    With theta = dist_tm1[a_tm1] ([N], quantile levels tau_i = (2i + 1) / 2N) and the target sample
    T = r_t + discount_t * dist_t_target[argmax_a q_t_selector[a]] ([M], gradient stopped):

        u_ij = T_j - theta_i
        loss = sum_i mean_j |tau_i - 1{u_ij < 0}| * huber(u_ij, huber_delta)

    (rlax.quantile_regression_loss's form: no division by the Huber threshold). As huber_delta -> 0 each theta_i
    moves to the tau_i-quantile of the target distribution; for |u| < huber_delta the penalty is quadratic, so
    pick the threshold on the scale of the stored rewards.

    Args:
      dist_tm1: [A, N] online quantile values at o_tm1.
      a_tm1: () int action taken at o_tm1.
      r_t: () reward.
      discount_t: () bootstrap factor (0 at a true terminal).
      dist_t_target: [A, M] target-network quantile values at o_t (M target samples; M = N in QR-DQN).
      q_t_selector: [A] Q-values choosing the bootstrap action: the target network's (QR-DQN) or the online
        network's (double QR-DQN).
      huber_delta: Huber threshold kappa > 0.

    Returns:
      (() loss, () mean TD error mean(T) - mean(theta), the priority signal of prioritized replay).
    """
    assert dist_tm1.ndim == 2 and dist_t_target.ndim == 2, (dist_tm1.shape, dist_t_target.shape)
    assert dist_t_target.shape[0] == dist_tm1.shape[0], (dist_tm1.shape, dist_t_target.shape)
    assert q_t_selector.shape == dist_tm1.shape[:1], (q_t_selector.shape, dist_tm1.shape)
    theta = dist_tm1[a_tm1]  # [N]
    target = jax.lax.stop_gradient(r_t + discount_t * dist_t_target[jnp.argmax(q_t_selector)])  # [N]
    return quantile_huber_loss(theta, target, huber_delta), jnp.mean(target) - jnp.mean(theta)


def quantile_huber_loss(theta: jax.Array, target: jax.Array, huber_delta: float = 1.0) -> jax.Array:
    """The quantile Huber loss of N quantile estimates against M target samples, for ONE example.

        u_ij = T_j - theta_i
        loss = sum_i mean_j |tau_i - 1{u_ij < 0}| * huber(u_ij, huber_delta),   tau_i = (2i + 1) / 2N

    with the gradient stopped through the targets (`quantile_td_loss` builds QR-DQN's one-step target sample;
    `jaxrl.dqn.pqn` regresses a quantile head on Q(lambda) returns per quantile).

    Args:
      theta: [N] estimated quantiles, at levels `quantile_midpoints(N)`.
      target: [M] samples of the target distribution.
      huber_delta: Huber threshold kappa > 0.

    Returns:
      () loss.
    """
    assert theta.ndim == 1 and target.ndim == 1, (theta.shape, target.shape)
    u = jax.lax.stop_gradient(target)[None, :] - theta[:, None]  # [N, M]
    weight = jnp.abs(quantile_midpoints(theta.shape[0])[:, None] - (u < 0).astype(jnp.float32))
    return jnp.sum(jnp.mean(weight * optax.losses.huber_loss(u, delta=huber_delta), axis=1))
