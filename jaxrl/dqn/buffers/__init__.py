"""Experience replay as pure functions over explicit, on-device state (flashbax style): the pure core.

- `replay`: the uniform ring buffer (`Transition` rows, masked batched `add`, uniform `sample`);
- `prioritized`: proportional prioritized replay on the same ring, drawn through a sum tree;
- `nstep`: per-env n-step windows that turn transitions into n-step rows before the buffer;
- `frames`: each env's RAM snapshots stored once, so rows of stacked observations hold references, not stacks.

Each is a `make_*` factory that validates its arguments and binds the static sizes into a NamedTuple of pure
functions (`init`, `add` / `update`, `sample`, `can_sample`).
"""
from jaxrl.dqn.buffers.frames import FrameStore, FrameStoreState, frames_per_env_for, make_frame_store
from jaxrl.dqn.buffers.nstep import NStep, NStepState, make_nstep
from jaxrl.dqn.buffers.prioritized import (
    PrioritizedReplayBuffer,
    PrioritizedReplayState,
    PrioritizedSample,
    make_prioritized_replay_buffer,
)
from jaxrl.dqn.buffers.replay import ReplayBuffer, ReplayState, Transition, make_replay_buffer

__all__ = [
    "FrameStore", "FrameStoreState", "frames_per_env_for", "make_frame_store", "NStep", "NStepState", "PrioritizedReplayBuffer", "PrioritizedReplayState", "PrioritizedSample", "ReplayBuffer",
    "ReplayState", "Transition", "make_nstep", "make_prioritized_replay_buffer", "make_replay_buffer",
]
