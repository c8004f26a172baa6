"""Every hyper-parameter and run setting of a DQN run, as one frozen, validated dataclass.

Each field carries, in its ``dataclasses.field`` metadata, its ``group`` (the concern it belongs to), its
``help`` text and its validation ``rule`` (``Int``, ``Real``, ``Choice``, ``Flag``, ``Sizes``, ``Text``);
``_validate`` applies the rules and then the checks that relate several fields, and ``jaxrl.dqn.run.cli`` builds
one flag per field from the same metadata. Adding an option is: a field here, the code that uses it, its test.

Units: a *step* is one agent-environment transition of one env (so a call to the vectorised env with
``num_envs`` envs is ``num_envs`` steps); an env *frame* is one emulator frame (``step * frame_skip``).
``update_every`` counts calls of the learner (one call per vectorised env step), so the replay ratio is
``updates_per_call / (update_every * num_envs)`` DQN updates per step.

The ``seed`` preset is the reference agent (MLP 128-256-256-A on RAM scaled to [0, 1], replay
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

from jaxrl.dqn.envs.atari import NUM_RAM_BYTES

BACKENDS = ("auto", "envpool", "gymnasium")
# As jaxrl.dqn.encoders (not imported: config stays jax-free). The game encodings decode Space Invaders' RAM.
OBS_ENCODINGS = ("scale", "bits", "objects", "planes", "bilinear-planes", "box-planes", "ego-planes")
GAME_ENCODINGS = ("objects", "planes", "bilinear-planes", "box-planes", "ego-planes")
GAME_ENV_PREFIX = "SpaceInvaders"
LOOPS = ("auto", "python", "xla")
ALGOS = ("dqn", "pqn")
OPTIMIZERS = ("adam", "radam")

# Fields that may differ between a checkpoint and the run that resumes it: they change neither the state's
# shapes nor what the agent learns from a given stream of transitions. ``loop`` and ``xla_chunk_calls`` are
# among them: both loops run the same jitted ``learner.step`` on the same env stream (same envpool envs,
# seeded per segment, cut at the same calls), so a run may be resumed with the other loop (on CPU the two
# loops give bit-identical states; tests/test_dqn_train_xla.py).
RESUMABLE_FIELDS = frozenset({"total_steps", "log_every", "keep_checkpoints", "eval_episodes", "eval_epsilon",
                              "loop", "xla_chunk_calls"})


# -- validation rules (one per field, in its metadata) ----------------------------------------------------
def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (no bool), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_real(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float in [low, high] (``(low, high]`` with ``low_open``; no bool, no NaN), or a
    ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in [low, high] (high None: no upper bound)."""

    low: int = 1
    high: int | None = None

    def __call__(self, name: str, value) -> None:
        check_int(name, value, self.low, self.high)


@dataclasses.dataclass(frozen=True)
class Real:
    """A real number in [low, high] (``(low, high]`` with low_open); None too when ``optional``."""

    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    optional: bool = False
    finite: bool = False

    def __call__(self, name: str, value) -> None:
        if value is None and self.optional:
            return
        check_real(name, value, self.low, self.high, low_open=self.low_open)
        if self.finite and not math.isfinite(value):
            raise ValueError(f"{name} must be finite")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``options`` (strings)."""

    options: tuple[str, ...]

    def __call__(self, name: str, value) -> None:
        if value not in self.options:
            raise ValueError(f"{name} must be one of {', '.join(self.options)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Flag:
    """A bool."""

    def __call__(self, name: str, value) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """A non-empty tuple of positive integers (layer widths, channels, strides); ``metavar`` names one."""

    metavar: str = "WIDTH"

    def __call__(self, name: str, value) -> None:
        if not value or not all(not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= 1
                                for v in value):
            raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Text:
    """A non-empty string."""

    def __call__(self, name: str, value) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")


GROUPS = ("env", "network", "loss", "replay", "pqn", "exploration", "run")


def _field(default, group: str, help: str, rule) -> Any:
    """A DQNConfig field with its metadata: the concern it belongs to, its help text and validation rule."""
    assert group in GROUPS, group
    return dataclasses.field(default=default, metadata={"group": group, "help": help, "rule": rule})


_PROBABILITY = Real(0.0, 1.0)
_POSITIVE = Real(0.0, math.inf, low_open=True)


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters and run settings of a DQN run on Atari RAM (validated on construction).

    Fields by group (``metadata["group"]``; their help texts are ``jaxrl dqn train --help``): ``env`` (both
    backends, ``jaxrl.dqn.envs``), ``network`` (``jaxrl.dqn.network``), ``loss`` (``jaxrl.dqn.agent``),
    ``replay`` (``jaxrl.dqn.learner``, ``jaxrl.dqn.buffers``), ``exploration`` and ``run``
    (``jaxrl.dqn.run.train``).
    """

    # env
    env_id: str = _field("SpaceInvaders-v5", "env", "envpool task id (gymnasium adds ALE/)", Text())
    backend: str = _field("auto", "env", "envpool when installed (auto), or gymnasium + ale-py", Choice(BACKENDS))
    num_envs: int = _field(8, "env", "envs stepped together", Int(1, 4096))
    frame_skip: int = _field(4, "env", "emulator frames per agent step (action repeated, rewards summed)",
                             Int(1, 64))
    repeat_action_probability: float = _field(0.25, "env", "sticky actions, per frame (Machado et al. 2018)",
                                              _PROBABILITY)
    noop_max: int = _field(30, "env", "uniform [1, N] no-op frames after each reset", Int(1, 10_000))
    max_episode_frames: int = _field(108_000, "env", "truncate (bootstrap) an episode after this many frames",
                                     Int(1))
    frame_stack: int = _field(1, "env", "observe each env's last K RAM snapshots (K * 128 bytes, oldest first, "
                                        "refilled at every reset)", Int(1, 16))
    # network
    hidden_sizes: tuple[int, ...] = _field((256, 256), "network", "Q-network hidden widths", Sizes())
    obs_encoding: str = _field(
        "scale", "network", "Q-network input: scale (RAM / 255), bits (8 inputs per byte), objects (decoded "
        "Space Invaders objects, egocentric vector), planes (objects on a grid, CNN), bilinear-planes (the "
        "grid keeping positions within a cell), box-planes (the objects' boxes on a grid of 4x5 px cells) or "
        "ego-planes (bilinear planes centred on the player); the last five need --frame-stack >= 2",
        Choice(OBS_ENCODINGS))
    conv_channels: tuple[int, ...] = _field((16, 32), "network", "channels of the 3x3 convolutions on "
                                                                 "the planes encodings", Sizes())
    conv_strides: tuple[int, ...] = _field((2, 2), "network", "stride of each of those convolutions (one per "
                                                              "--conv-channels entry; 1 keeps the grid's resolution)",
                                           Sizes("STRIDE"))
    conv_layer_norm: bool = _field(False, "network", "LayerNorm after each convolution, before its ReLU (as in "
                                                     "CleanRL's and purejaxql's Atari PQN networks)", Flag())
    dueling: bool = _field(False, "network", "dueling Q-network head (value + advantages)", Flag())
    layer_norm: bool = _field(False, "network", "LayerNorm in each hidden layer of the Q-network", Flag())
    num_quantiles: int = _field(0, "network", "0: Q-values; N > 0: N return quantiles per action, regressed with "
                                              "the quantile Huber loss (QR-DQN; with --algo pqn on per-quantile "
                                              "Q(lambda) returns; --huber-delta is its kappa)", Int(0, 10_000))
    # loss and optimizer
    algo: str = _field("dqn", "loss", "dqn: replay buffer and target network (jaxrl.dqn.learner); pqn: Q(lambda) "
                                      "regression on rollouts of the envs, no replay, no target network "
                                      "(jaxrl.dqn.pqn; the replay flags do not apply)", Choice(ALGOS))
    gamma: float = _field(0.98, "loss", "discount", _PROBABILITY)
    learning_rate: float = _field(2e-3, "loss", "optimizer step size", Real(0.0, math.inf, low_open=True, finite=True))
    learning_rate_end: float | None = _field(
        None, "loss", "step size reached linearly after --learning-rate-decay-steps, then kept (none: "
        "constant; the schedule does not depend on --total-steps, so a resumed run keeps it)",
        Real(0.0, math.inf, optional=True))
    optimizer: str = _field("adam", "loss", "adam, or radam (rectified Adam, PQN's)", Choice(OPTIMIZERS))
    adam_eps: float = _field(1e-8, "loss", "Adam's epsilon, added to the root of its second-moment estimate",
                             _POSITIVE)
    learning_rate_decay_steps: int = _field(2_500_000, "loss", "env steps over which the step size decays to "
                                                               "--learning-rate-end", Int(1))
    huber_delta: float = _field(1.0, "loss", "Huber loss threshold", _POSITIVE)
    max_grad_norm: float | None = _field(None, "loss", "global gradient-norm clip (none: off)",
                                         Real(0.0, math.inf, low_open=True, optional=True))
    double_dqn: bool = _field(False, "loss", "double-DQN targets", Flag())
    munchausen_alpha: float = _field(0.0, "loss", "> 0: Munchausen-DQN targets with this log-policy bonus weight "
                                                  "(paper: 0.9)", _PROBABILITY)
    munchausen_temperature: float = _field(0.03, "loss", "Munchausen softmax temperature, in stored reward units "
                                                         "(paper: 0.03)", _POSITIVE)
    target_update_period: int = _field(250, "loss", "updates between hard target syncs", Int(1))
    tau: float = _field(1.0, "loss", "1: hard sync; < 1: Polyak averaging every update",
                        Real(0.0, 1.0, low_open=True))
    # replay
    buffer_size: int = _field(100_000, "replay", "replay capacity (transitions)", Int(1))
    batch_size: int = _field(128, "replay", "transitions per update", Int(1))
    reward_scale: float = _field(0.01, "replay", "reward multiplier before storing", _POSITIVE)
    clip_rewards: bool = _field(False, "replay", "store sign(reward) * reward_scale (Nature DQN clipping)", Flag())
    symlog_rewards: bool = _field(False, "replay", "store sign(reward) * log(1 + |reward|) * reward_scale: a score "
                                                   "compressed, not clipped, so larger rewards still count more "
                                                   "(Hafner et al., 2023's symlog)", Flag())
    life_loss_terminal: bool = _field(False, "replay", "store a life-losing step as terminal (the game goes on)",
                                      Flag())
    n_step: int = _field(1, "replay", "n-step returns (1: one-step DQN targets)", Int(1, 100))
    prioritized_replay: bool = _field(False, "replay", "proportional prioritized replay (Schaul et al. 2016)",
                                      Flag())
    priority_exponent: float = _field(0.5, "replay", "prioritized replay: alpha, priority = |TD error| ** alpha",
                                      _PROBABILITY)
    importance_exponent: float = _field(0.5, "replay", "prioritized replay: beta of the importance weights",
                                        _PROBABILITY)
    replay_frames: bool = _field(
        True, "replay", "with --frame-stack K > 1, rows hold references to each env's RAM snapshots, stored once, "
        "and the stacks are rebuilt when rows are sampled (about 28 MB per 100k rows whatever K; "
        "jaxrl.dqn.buffers.frames); --no-replay-frames: rows hold the stacks (2K * 128 bytes a row)", Flag())
    learning_starts: int = _field(2_000, "replay", "env steps before the first update", Int(0))
    update_every: int = _field(1, "replay", "learner calls (one per vectorised env step) between update phases",
                               Int(1))
    updates_per_call: int = _field(1, "replay", "DQN updates per update phase", Int(1))
    # PQN (algo pqn)
    rollout_steps: int = _field(128, "pqn", "learner calls per rollout: the envs' last T steps are regressed on "
                                            "once T calls are in", Int(1, 100_000))
    num_minibatches: int = _field(4, "pqn", "minibatches per pass over a rollout (num_envs * rollout_steps rows)",
                                  Int(1))
    epochs: int = _field(4, "pqn", "passes over each rollout", Int(1, 1_000))
    q_lambda: float = _field(0.65, "pqn", "lambda of the Q(lambda) returns (0: one-step targets)", _PROBABILITY)
    # exploration
    epsilon_start: float = _field(0.08, "exploration", "initial exploration rate", _PROBABILITY)
    epsilon_end: float = _field(0.01, "exploration", "final exploration rate", _PROBABILITY)
    epsilon_decay_steps: int = _field(1_000_000, "exploration", "env steps of linear epsilon decay", Int(1))
    # run
    seed: int = _field(0, "run", "run seed (network init, exploration, env seeds)", Int(0, 2**31 - 1))
    num_seeds: int = _field(1, "run", "S > 1: train S independent agents (seeds seed .. seed + S - 1; each the "
                                      "agent trained alone with its seed) in one run, sharded over every device "
                                      "of every process; host env loop", Int(1, 4096))
    total_steps: int = _field(2_500_000, "run", "env steps to train (all envs)", Int(1))
    checkpoint_every: int = _field(100_000, "run", "env steps between checkpoints (segment boundaries: every "
                                         "env's game is cut and fresh envs start)", Int(1))
    keep_checkpoints: int = _field(3, "run", "latest checkpoints kept (plus the best)", Int(1))
    eval_episodes: int = _field(8, "run", "eval episodes at each checkpoint (0: off; the best checkpoint is then "
                                          "the best by training return)", Int(0))
    eval_epsilon: float = _field(0.05, "run", "epsilon of those evals", _PROBABILITY)
    log_every: int = _field(10_000, "run", "env steps between metrics.csv rows", Int(1))
    loop: str = _field("auto", "run", "auto: xla with envpool, else python; python: host env loop, one jitted "
                                      "learner call per env step; xla: envpool's XLA step and the learner compiled "
                                      "together (envpool only)", Choice(LOOPS))
    xla_chunk_calls: int = _field(256, "run", "--loop xla: most learner calls per compiled call (the host checks "
                                              "Ctrl-C between them)", Int(1, 100_000))

    def __post_init__(self) -> None:
        for name in ("hidden_sizes", "conv_channels", "conv_strides"):
            if isinstance(getattr(self, name), (list, tuple)):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    # -- derived values ---------------------------------------------------------------------------
    @property
    def steps_per_update(self) -> float:
        """Env steps per update (DQN: the inverse replay ratio; PQN: a rollout's rows per its minibatches)."""
        if self.algo == "pqn":
            return self.rollout_steps * self.num_envs / (self.epochs * self.num_minibatches)
        return self.update_every * self.num_envs / self.updates_per_call

    @property
    def obs_size(self) -> int:
        """Bytes the agent observes per env: 128 RAM bytes per stacked snapshot."""
        return NUM_RAM_BYTES * self.frame_stack

    @property
    def learning_rate_decay_updates(self) -> int:
        """Updates over which learning_rate decays to learning_rate_end (0 when constant)."""
        if self.learning_rate_end is None:
            return 0
        return max(1, math.ceil(self.learning_rate_decay_steps / self.steps_per_update))

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["conv_channels"] = list(self.conv_channels)
        out["conv_strides"] = list(self.conv_strides)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DQNConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown DQNConfig field(s): {', '.join(unknown)}")
        # A saved config without replay_frames is from a run whose replay rows hold stacks: its checkpoints keep
        # that layout. Every other missing field takes its default.
        return cls(**{"replay_frames": False, **values})

    @classmethod
    def from_json(cls, text: str) -> "DQNConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "DQNConfig":
        return dataclasses.replace(self, **changes)

    def for_agent(self, agent: int) -> "DQNConfig":
        """Agent ``agent`` of a multi-seed run (``num_seeds`` > 1) as the one-agent run it equals: seed + agent."""
        check_int("agent", agent, 0, self.num_seeds - 1)
        return self.replace(seed=self.seed + agent, num_seeds=1)


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
    # The reference agent (see the module docstring); defaults of DQNConfig are this preset.
    "seed": {},
    # Same agent at CleanRL's Atari replay ratio: with 8 envs, one update per 4 steps and a target sync every
    # 250 updates (= 1,000 steps, CleanRL's target_network_frequency).
    "cleanrl-ratio": dict(updates_per_call=2, target_update_period=250),
    # The best configuration measured here on SpaceInvaders-RAM (docs/notes/dqn-learning.md): the seed agent
    # with 3-step returns, a lost life stored as terminal and gamma 0.99, updating every 2nd call (one update
    # per 16 env steps with 8 envs: it learned as well as every call and trains near raw env speed on 2 cores),
    # and Adam 2.5e-4 (at 2e-3 the greedy policy churns: frozen snapshots play far worse than training shows).
    "tuned": dict(n_step=3, life_loss_terminal=True, gamma=0.99, update_every=2, learning_rate=2.5e-4),
    # `tuned` on Space Invaders' RAM decoded into objects (an egocentric feature vector; bullets need two
    # snapshots): the best mean frozen-policy eval measured here at 10M frames (docs/dqn-results.md).
    "objects": dict(n_step=3, life_loss_terminal=True, gamma=0.99, update_every=2, learning_rate=2.5e-4,
                    obs_encoding="objects", frame_stack=2),
    # `objects` drawn as planes for a small CNN, at half the replay ratio: the highest mean frozen-policy eval
    # measured here at 10M frames (386 ± 70, three seeds; docs/dqn-results.md), a quarter of `objects`' speed
    # on a 2-core CPU.
    "planes": dict(n_step=3, life_loss_terminal=True, gamma=0.99, update_every=4, learning_rate=2.5e-4,
                   obs_encoding="planes", frame_stack=2),
    # PQN (algo pqn, jaxrl.dqn.pqn) on the bilinear object planes of the last two snapshots (a stack of 3: the
    # oldest only tells which bullets move): CleanRL's Atari PQN settings (8 envs x 128-step rollouts, 4 epochs
    # of 4 minibatches, RAdam 2.5e-4 annealed to 0 over 10M frames, gradient norm 10, lambda 0.65, gamma 0.99,
    # epsilon 1 -> 0.01 over the first 1M frames, rewards clipped to their sign, a lost life ends the bootstrap
    # horizon) with LayerNorm: 570.8 ± 42.8 over five seeds at 10M frames (docs/dqn-results.md); the default until
    # 2026-12-03. Checkpoints every 500k steps: each segment of the compiled loop is one compile.
    "pqn": dict(algo="pqn", obs_encoding="bilinear-planes", frame_stack=3, layer_norm=True, optimizer="radam",
                learning_rate=2.5e-4, learning_rate_end=0.0, learning_rate_decay_steps=2_500_000, max_grad_norm=10.0,
                gamma=0.99, clip_rewards=True, reward_scale=1.0, life_loss_terminal=True, epsilon_start=1.0,
                epsilon_end=0.01, epsilon_decay_steps=250_000, checkpoint_every=500_000),
    # A few-second smoke run for tests and CI: tiny network and buffer, frequent checkpoints.
    "tiny": dict(
        num_envs=4, hidden_sizes=(32,), buffer_size=1_024, batch_size=32, learning_starts=128,
        target_update_period=50, epsilon_decay_steps=1_000, total_steps=1_200, checkpoint_every=400,
        keep_checkpoints=2, eval_episodes=0, log_every=200, max_episode_frames=400,
    ),
}


# `pqn` on the egocentric planes (the bilinear planes centred on the cannon: 19 x 39 cells and a field channel):
# 658.2 ± 39.4 over ten seeds at 10M frames (docs/dqn-results.md); the default until 2026-12-04.
PRESETS["pqn-ego"] = dict(PRESETS["pqn"], obs_encoding="ego-planes")

# `pqn-ego` in CleanRL's Atari PQN rollout shape: 128 envs x 32-step rollouts, 2 epochs of 32 minibatches of 128 rows
# (the same 1/64 updates per env step as `pqn-ego`'s 8 envs x 128 steps, 4 epochs of 4 minibatches of 256 rows), and
# a segment boundary (a checkpoint, where every env's game is cut) every 2.5M env steps, 19,531 steps per env (one
# segment in its 10M frames; 500k steps cut every game each 3,906): 694.2 ± 25.9 over five seeds at 10M frames, the
# highest measured here (676.5 ± 15.9 with 500k-step segments; docs/dqn-results.md); twice `pqn-ego`'s env steps/s
# on a 2-core CPU, 3x on an H200.
PRESETS["pqn-ego-e128"] = dict(PRESETS["pqn-ego"], num_envs=128, rollout_steps=32, epochs=2, num_minibatches=32,
                               checkpoint_every=2_500_000)

# `pqn-ego-e128` for 40M-frame runs: the step size and epsilon scheduled over 40M frames (to 0 over the run; epsilon
# over its first 10%), four segments: 1,390.5 ± 90.3 over four seeds at 40M frames, the highest four-seed mean
# measured here (1,203.8 ± 139.9 with 500k-step segments; docs/dqn-results.md).
PRESETS["pqn-ego-40m"] = dict(PRESETS["pqn-ego-e128"], total_steps=10_000_000, learning_rate_decay_steps=10_000_000,
                              epsilon_decay_steps=1_000_000)

# What `jaxrl dqn train` starts from without --preset.
DEFAULT_PRESET = "pqn-ego-e128"


def preset(name: str, **overrides: Any) -> DQNConfig:
    """The named preset (``seed``, ``cleanrl-ratio``, ``tuned``, ``objects``, ``planes``, ``pqn``, ``pqn-ego``,
    ``pqn-ego-e128``, ``pqn-ego-40m``, ``tiny``) with ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return DQNConfig(**{**PRESETS[name], **overrides})


# -- validation -------------------------------------------------------------------------------------
# DQN options with no meaning for PQN's loss: refused rather than silently ignored (value that is off, flag).
_DQN_ONLY = (("munchausen_alpha", 0.0, "--munchausen-alpha"),
             ("double_dqn", False, "--double-dqn"), ("prioritized_replay", False, "--prioritized-replay"),
             ("n_step", 1, "--n-step"))


def _validate_pqn(config: DQNConfig) -> None:
    for name, off, flag in _DQN_ONLY:
        if getattr(config, name) != off:
            raise ValueError(f"{name}={getattr(config, name)!r} is a DQN option ({flag}); algo='pqn' regresses "
                             f"Q(lambda) returns (use --q-lambda, or --algo dqn)")
    rows = config.num_envs * config.rollout_steps
    if rows % config.num_minibatches:
        raise ValueError(f"num_envs * rollout_steps ({config.num_envs} * {config.rollout_steps}) must be divisible "
                         f"by num_minibatches ({config.num_minibatches})")


def _validate(config: DQNConfig) -> None:
    """Each field's own rule (its metadata), in field order, then the checks that relate fields."""
    for field in dataclasses.fields(config):
        field.metadata["rule"](field.name, getattr(config, field.name))
    _validate_combinations(config)


def _validate_combinations(config: DQNConfig) -> None:
    if config.algo == "pqn":
        _validate_pqn(config)
    if config.repeat_action_probability >= 1.0:
        raise ValueError("repeat_action_probability must be < 1 (1 would repeat the first action forever)")
    check_int("max_episode_frames", config.max_episode_frames, config.frame_skip)
    if config.obs_encoding in GAME_ENCODINGS:
        if not config.env_id.startswith(GAME_ENV_PREFIX):
            raise ValueError(f"obs_encoding={config.obs_encoding!r} decodes Space Invaders' RAM; env_id "
                             f"{config.env_id!r} is not a {GAME_ENV_PREFIX} task (use scale or bits)")
        if config.frame_stack < 2:
            raise ValueError(f"obs_encoding={config.obs_encoding!r} needs frame_stack >= 2 (bullets are seen as "
                             f"changes between consecutive RAM snapshots), got {config.frame_stack}")
    if config.clip_rewards and config.symlog_rewards:
        raise ValueError("clip_rewards and symlog_rewards are two ways to store the reward; choose one "
                         "(--no-clip-rewards --symlog-rewards)")
    if len(config.conv_strides) != len(config.conv_channels):
        raise ValueError(f"conv_strides {list(config.conv_strides)} must give one stride per convolution of "
                         f"conv_channels {list(config.conv_channels)}")
    if config.batch_size > config.buffer_size:
        raise ValueError(f"batch_size ({config.batch_size}) must be <= buffer_size ({config.buffer_size})")
    if config.num_envs * config.n_step > config.buffer_size:
        raise ValueError(f"num_envs * n_step ({config.num_envs} * {config.n_step}) must be <= buffer_size "
                         f"({config.buffer_size})")
    if config.learning_rate_end is not None:
        check_real("learning_rate_end", config.learning_rate_end, 0.0, config.learning_rate)
    if config.num_quantiles > 0 and config.munchausen_alpha > 0:
        raise ValueError("num_quantiles > 0 cannot be combined with munchausen_alpha > 0 (Munchausen targets are "
                         "implemented for Q-values only)")
    if config.munchausen_alpha > 0 and config.double_dqn:
        raise ValueError("double_dqn cannot be combined with munchausen_alpha > 0 (Munchausen targets bootstrap "
                         "a soft value, not an argmax)")
    if config.num_seeds > 1 and config.loop == "xla":
        raise ValueError("num_seeds > 1 steps each agent's envs on the host (--loop python or auto); the compiled "
                         "loop (--loop xla) trains one agent")
    check_int("seed + num_seeds - 1", config.seed + config.num_seeds - 1, 0, 2**31 - 1)
    if config.loop == "xla" and config.backend == "gymnasium":
        raise ValueError("loop='xla' needs the envpool backend (gymnasium has no XLA interface); use --backend "
                         "envpool (or auto) or --loop python")
