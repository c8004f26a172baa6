"""Every hyper-parameter and run setting of a DQN run, as one frozen, validated dataclass.

Units: a *step* is one agent-environment transition of one env (so a call to the vectorised env with
``num_envs`` envs is ``num_envs`` steps); an env *frame* is one emulator frame (``step * frame_skip``).
``update_every`` counts calls of the learner (one call per vectorised env step), so the replay ratio is
``updates_per_call / (update_every * num_envs)`` DQN updates per step.

The ``seed`` preset is the reference agent of issue 3 (MLP 128-256-256-A on RAM scaled to [0, 1], replay
100k, batch 128, gamma 0.98, Adam 2e-3, Huber loss, epsilon 8% -> 1%, reward / 100, learning after 2,000
transitions), with the reference's episode-based schedule (10 updates per episode, target sync every 20
episodes) re-expressed in steps: one update per 8 steps and a hard target sync every 250 updates.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any, Mapping

BACKENDS = ("auto", "envpool", "gymnasium")
# As jaxrl.dqn.encoders (not imported: config stays jax-free). The game encodings decode Space Invaders' RAM.
OBS_ENCODINGS = ("scale", "bits", "objects", "planes")
GAME_ENCODINGS = ("objects", "planes")
GAME_ENV_PREFIX = "SpaceInvaders"
LOOPS = ("auto", "python", "xla")

# Fields that may differ between a checkpoint and the run that resumes it: they change neither the state's
# shapes nor what the agent learns from a given stream of transitions. ``loop`` and ``xla_chunk_calls`` are
# among them: both loops run the same jitted ``learner.step`` on the same env stream (same envpool envs,
# seeded per segment, cut at the same calls), so a run may be resumed with the other loop (on CPU the two
# loops give bit-identical states; tests/test_dqn_train_xla.py).
RESUMABLE_FIELDS = frozenset({"total_steps", "log_every", "keep_checkpoints", "eval_episodes", "eval_epsilon",
                              "loop", "xla_chunk_calls"})


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters and run settings of a DQN run on Atari RAM (validated on construction).

    Environment (both backends; see ``jaxrl.dqn.envs``):
        env_id: envpool task id, e.g. ``"SpaceInvaders-v5"`` (gymnasium uses ``"ALE/SpaceInvaders-v5"``).
        backend: ``"auto"`` (envpool when importable, else gymnasium), ``"envpool"`` or ``"gymnasium"``.
        num_envs: N envs stepped together.
        frame_skip: emulator frames per agent step (action repeated, rewards summed).
        repeat_action_probability: sticky-action probability per frame (Machado et al. 2018; ALE v5: 0.25).
        noop_max: after each reset, a uniform random number in [1, noop_max] of no-op frames (envpool's rule).
        max_episode_frames: an episode is truncated (bootstrapped, not terminal) after this many frames.
        frame_stack: the agent sees each env's last k RAM snapshots (``[k * 128]`` bytes, oldest first, refilled
            at every reset; ``jaxrl.dqn.frame_stack``); 1: the current RAM only.
    Agent (``jaxrl.dqn.learner.make_learner``):
        hidden_sizes, obs_encoding (``"scale"``: RAM / 255; ``"bits"``: 8 binary inputs per byte), dueling
        (value + advantage head), layer_norm (LayerNorm in each hidden layer), num_quantiles (0: DQN's
        expected-value head; N > 0: QR-DQN, N quantiles of the return per action; huber_delta is then its
        quantile Huber threshold), buffer_size, batch_size, gamma,
        learning_rate, learning_rate_end (None: constant; else Adam's step size goes linearly from
        learning_rate to it over the updates of the first learning_rate_decay_steps env steps, then stays:
        like epsilon, the schedule does not depend on total_steps, so a resumed run keeps it), huber_delta,
        max_grad_norm (None: no clipping), double_dqn, munchausen_alpha (> 0:
        Munchausen-DQN targets, ``jaxrl.dqn.agent.munchausen_target``) and munchausen_temperature (in stored
        reward units), target_update_period (updates between hard syncs), tau (1.0: hard copy,
        < 1: Polyak averaging every update), reward_scale (multiplies rewards before they are stored),
        clip_rewards (store sign(reward) * reward_scale, the Nature DQN's clipping), life_loss_terminal (a
        step that loses a life is stored as terminal, the game goes on: CleanRL's EpisodicLifeEnv without
        its resets), n_step (1: one-step targets; n: n-step returns, ``jaxrl.dqn.nstep``), prioritized_replay
        (proportional prioritized replay, ``jaxrl.dqn.prioritized``) with priority_exponent (alpha) and
        importance_exponent (beta of the importance weights),
        epsilon_start, epsilon_end, epsilon_decay_steps (linear, in steps), learning_starts (steps before
        the first update), update_every (calls between update phases), updates_per_call.
    Run:
        seed, total_steps, checkpoint_every (steps), keep_checkpoints (last N kept, plus the best by eval
        return), eval_episodes (run at each checkpoint with ``eval_epsilon``; 0: best by training return),
        log_every (steps between ``metrics.csv`` rows), loop (``"auto"``, the default: ``"xla"`` when the
        backend is envpool, else ``"python"``; ``"python"``: the host steps the envs and calls
        the jitted learner step once per vectorised step; ``"xla"``: envpool's XLA interface and the learner
        step compiled together in one ``lax.while_loop``, needs the envpool backend), xla_chunk_calls (most
        learner calls per compiled call of the XLA loop; a compiled call also ends at each ``metrics.csv``
        row and segment boundary; the host checks Ctrl-C and updates the progress bar between them).
    """

    # environment
    env_id: str = "SpaceInvaders-v5"
    backend: str = "auto"
    num_envs: int = 8
    frame_skip: int = 4
    repeat_action_probability: float = 0.25
    noop_max: int = 30
    max_episode_frames: int = 108_000
    frame_stack: int = 1
    # network and agent
    hidden_sizes: tuple[int, ...] = (256, 256)
    obs_encoding: str = "scale"
    conv_channels: tuple[int, ...] = (16, 32)
    dueling: bool = False
    layer_norm: bool = False
    num_quantiles: int = 0
    buffer_size: int = 100_000
    batch_size: int = 128
    gamma: float = 0.98
    learning_rate: float = 2e-3
    learning_rate_end: float | None = None
    learning_rate_decay_steps: int = 2_500_000
    huber_delta: float = 1.0
    max_grad_norm: float | None = None
    double_dqn: bool = False
    munchausen_alpha: float = 0.0
    munchausen_temperature: float = 0.03
    target_update_period: int = 250
    tau: float = 1.0
    reward_scale: float = 0.01
    clip_rewards: bool = False
    life_loss_terminal: bool = False
    n_step: int = 1
    prioritized_replay: bool = False
    priority_exponent: float = 0.5
    importance_exponent: float = 0.5
    epsilon_start: float = 0.08
    epsilon_end: float = 0.01
    epsilon_decay_steps: int = 1_000_000
    learning_starts: int = 2_000
    update_every: int = 1
    updates_per_call: int = 1
    # run
    seed: int = 0
    total_steps: int = 2_500_000
    checkpoint_every: int = 100_000
    keep_checkpoints: int = 3
    eval_episodes: int = 8
    eval_epsilon: float = 0.05
    log_every: int = 10_000
    loop: str = "auto"
    xla_chunk_calls: int = 256

    def __post_init__(self) -> None:
        for name in ("hidden_sizes", "conv_channels"):
            if isinstance(getattr(self, name), (list, tuple)):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    # -- derived values ---------------------------------------------------------------------------
    @property
    def steps_per_update(self) -> float:
        """Env steps per DQN update (the inverse replay ratio)."""
        return self.update_every * self.num_envs / self.updates_per_call

    @property
    def frames_per_step(self) -> int:
        return self.frame_skip

    @property
    def obs_size(self) -> int:
        """Bytes the agent observes per env: 128 RAM bytes per stacked snapshot."""
        return 128 * self.frame_stack

    @property
    def learning_rate_decay_updates(self) -> int:
        """Updates over which learning_rate decays to learning_rate_end (0 when constant)."""
        if self.learning_rate_end is None:
            return 0
        return max(1, math.ceil(self.learning_rate_decay_steps / self.steps_per_update))

    def learner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``make_learner(num_envs, num_actions, **kwargs)``."""
        return dict(
            buffer_size=self.buffer_size,
            batch_size=self.batch_size,
            gamma=self.gamma,
            learning_rate=self.learning_rate,
            learning_rate_end=self.learning_rate_end,
            learning_rate_decay_updates=self.learning_rate_decay_updates,
            learning_starts=self.learning_starts,
            update_every=self.update_every,
            updates_per_call=self.updates_per_call,
            target_update_period=self.target_update_period,
            tau=self.tau,
            double_dqn=self.double_dqn,
            munchausen_alpha=self.munchausen_alpha,
            munchausen_temperature=self.munchausen_temperature,
            reward_scale=self.reward_scale,
            clip_rewards=self.clip_rewards,
            life_loss_terminal=self.life_loss_terminal,
            n_step=self.n_step,
            prioritized_replay=self.prioritized_replay,
            priority_exponent=self.priority_exponent,
            importance_exponent=self.importance_exponent,
            epsilon_start=self.epsilon_start,
            epsilon_end=self.epsilon_end,
            epsilon_decay_steps=self.epsilon_decay_steps,
            **self.network_kwargs(),
            huber_delta=self.huber_delta,
            max_grad_norm=self.max_grad_norm,
        )

    def network_kwargs(self) -> dict[str, Any]:
        """The Q-network's keyword arguments of ``make_dqn`` / ``make_learner`` (to rebuild it for evaluation)."""
        return dict(hidden_sizes=self.hidden_sizes, obs_encoding=self.obs_encoding,
                    conv_channels=self.conv_channels, dueling=self.dueling,
                    layer_norm=self.layer_norm, num_quantiles=self.num_quantiles, obs_size=self.obs_size)

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``jaxrl.dqn.envs.make_vec_env`` (besides num_envs and seed)."""
        return dict(
            env_id=self.env_id,
            backend=self.backend,
            frame_skip=self.frame_skip,
            repeat_action_probability=self.repeat_action_probability,
            noop_max=self.noop_max,
            max_episode_frames=self.max_episode_frames,
            frame_stack=self.frame_stack,
        )

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["conv_channels"] = list(self.conv_channels)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DQNConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown DQNConfig field(s): {', '.join(unknown)}")
        return cls(**dict(values))

    @classmethod
    def from_json(cls, text: str) -> "DQNConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "DQNConfig":
        return dataclasses.replace(self, **changes)


def config_differences(saved: DQNConfig, current: DQNConfig, *, ignore=RESUMABLE_FIELDS) -> dict[str, tuple]:
    """Fields (other than ``ignore``) whose values differ: ``{name: (saved_value, current_value)}``."""
    out = {}
    for field in dataclasses.fields(DQNConfig):
        if field.name in ignore:
            continue
        a, b = getattr(saved, field.name), getattr(current, field.name)
        if a != b:
            out[field.name] = (a, b)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # The reference agent of issue 3 (see the module docstring); defaults of DQNConfig are this preset.
    "seed": {},
    # Same agent at CleanRL's Atari replay ratio: with 8 envs, one update per 4 steps and a target sync every
    # 250 updates (= 1,000 steps, CleanRL's target_network_frequency).
    "cleanrl-ratio": dict(updates_per_call=2, target_update_period=250),
    # The best configuration measured here on SpaceInvaders-RAM (docs/notes/dqn-learning.md): the seed agent
    # with 3-step returns, a lost life stored as terminal and gamma 0.99, updating every 2nd call (one update
    # per 16 env steps with 8 envs: it learned as well as every call and trains near raw env speed on 2 cores),
    # and Adam 2.5e-4 (at 2e-3 the greedy policy churns: frozen snapshots play far worse than training shows).
    "tuned": dict(n_step=3, life_loss_terminal=True, gamma=0.99, update_every=2, learning_rate=2.5e-4),
    # A few-second smoke run for tests and CI: tiny network and buffer, frequent checkpoints.
    "tiny": dict(
        num_envs=4, hidden_sizes=(32,), buffer_size=1_024, batch_size=32, learning_starts=128,
        target_update_period=50, epsilon_decay_steps=1_000, total_steps=1_200, checkpoint_every=400,
        keep_checkpoints=2, eval_episodes=0, log_every=200, max_episode_frames=400,
    ),
}


def preset(name: str, **overrides: Any) -> DQNConfig:
    """The named preset (``seed``, ``cleanrl-ratio``, ``tuned``, ``tiny``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return DQNConfig(**{**PRESETS[name], **overrides})


# -- validation -------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validate(config: DQNConfig) -> None:
    def need_int(name, low, high=None):
        value = getattr(config, name)
        if not _is_int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{name} must be {bound}, got {value}")

    def need_real(name, low, high, *, low_open=False):
        value = getattr(config, name)
        if not _is_real(value) or value != value:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        if (value <= low if low_open else value < low) or value > high:
            bound = f"{'(' if low_open else '['}{low}, {high}]"
            raise ValueError(f"{name} must be in {bound}, got {value}")

    if not isinstance(config.env_id, str) or not config.env_id:
        raise ValueError(f"env_id must be a non-empty string, got {config.env_id!r}")
    if config.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {config.backend!r}")
    need_int("num_envs", 1, 4096)
    need_int("frame_skip", 1, 64)
    need_real("repeat_action_probability", 0.0, 1.0)
    if config.repeat_action_probability >= 1.0:
        raise ValueError("repeat_action_probability must be < 1 (1 would repeat the first action forever)")
    need_int("noop_max", 1, 10_000)
    need_int("max_episode_frames", config.frame_skip)
    need_int("frame_stack", 1, 16)
    if not config.hidden_sizes or not all(_is_int(h) and h >= 1 for h in config.hidden_sizes):
        raise ValueError(f"hidden_sizes must be a non-empty sequence of positive integers, got {config.hidden_sizes!r}")
    if config.obs_encoding not in OBS_ENCODINGS:
        raise ValueError(f"obs_encoding must be one of {', '.join(OBS_ENCODINGS)}, got {config.obs_encoding!r}")
    if config.obs_encoding in GAME_ENCODINGS:
        if not config.env_id.startswith(GAME_ENV_PREFIX):
            raise ValueError(f"obs_encoding={config.obs_encoding!r} decodes Space Invaders' RAM; env_id "
                             f"{config.env_id!r} is not a {GAME_ENV_PREFIX} task (use scale or bits)")
        if config.frame_stack < 2:
            raise ValueError(f"obs_encoding={config.obs_encoding!r} needs frame_stack >= 2 (bullets are seen as "
                             f"changes between consecutive RAM snapshots), got {config.frame_stack}")
    if not config.conv_channels or not all(_is_int(c) and c >= 1 for c in config.conv_channels):
        raise ValueError(f"conv_channels must be a non-empty sequence of positive integers, got "
                         f"{config.conv_channels!r}")
    need_int("buffer_size", 1)
    need_int("batch_size", 1)
    if config.batch_size > config.buffer_size:
        raise ValueError(f"batch_size ({config.batch_size}) must be <= buffer_size ({config.buffer_size})")
    need_real("gamma", 0.0, 1.0)
    need_real("learning_rate", 0.0, float("inf"), low_open=True)
    if config.learning_rate == float("inf"):
        raise ValueError("learning_rate must be finite")
    if config.learning_rate_end is not None:
        need_real("learning_rate_end", 0.0, config.learning_rate)
    need_int("learning_rate_decay_steps", 1)
    need_real("huber_delta", 0.0, float("inf"), low_open=True)
    if config.max_grad_norm is not None:
        need_real("max_grad_norm", 0.0, float("inf"), low_open=True)
    for name in ("double_dqn", "clip_rewards", "life_loss_terminal", "dueling", "layer_norm",
                 "prioritized_replay"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be a bool, got {getattr(config, name)!r}")
    need_int("num_quantiles", 0, 10_000)
    if config.num_quantiles > 0 and config.munchausen_alpha > 0:
        raise ValueError("num_quantiles > 0 cannot be combined with munchausen_alpha > 0 (Munchausen targets are "
                         "implemented for Q-values only)")
    need_int("target_update_period", 1)
    need_real("tau", 0.0, 1.0, low_open=True)
    need_real("munchausen_alpha", 0.0, 1.0)
    need_real("munchausen_temperature", 0.0, float("inf"), low_open=True)
    if config.munchausen_alpha > 0 and config.double_dqn:
        raise ValueError("double_dqn cannot be combined with munchausen_alpha > 0 (Munchausen targets bootstrap "
                         "a soft value, not an argmax)")
    need_real("reward_scale", 0.0, float("inf"), low_open=True)
    need_real("epsilon_start", 0.0, 1.0)
    need_real("epsilon_end", 0.0, 1.0)
    need_int("epsilon_decay_steps", 1)
    need_int("learning_starts", 0)
    need_int("update_every", 1)
    need_int("updates_per_call", 1)
    need_int("n_step", 1, 100)
    need_real("priority_exponent", 0.0, 1.0)
    need_real("importance_exponent", 0.0, 1.0)
    need_int("seed", 0, 2**31 - 1)
    need_int("total_steps", 1)
    need_int("checkpoint_every", 1)
    need_int("keep_checkpoints", 1)
    need_int("eval_episodes", 0)
    need_real("eval_epsilon", 0.0, 1.0)
    need_int("log_every", 1)
    if config.loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {config.loop!r}")
    if config.loop == "xla" and config.backend == "gymnasium":
        raise ValueError("loop='xla' needs the envpool backend (gymnasium has no XLA interface); use --backend "
                         "envpool (or auto) or --loop python")
    need_int("xla_chunk_calls", 1, 100_000)
