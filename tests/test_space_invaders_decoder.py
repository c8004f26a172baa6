"""The Space Invaders RAM decoder against ale-py's own rendered frames, and by hand-built RAM.

The frame checks record one episode with ale-py (which ships the ROM): a fixed seed and a seeded policy (random
actions biased to FIRE and moves, stepping aside from enemy bullets coming down on the cannon, so that the
episode lives long enough for the mystery ship and for the aliens to descend past the shields). ALE runs at
frame skip 1 so that both of the last two frames of every agent step (frames 4t - 1 and 4t) can be compared:
the game draws the player's bullet on even frames and the enemy bullets on odd ones only. Where the optional
``ocatari`` package imports, the decoded objects are also compared with its RAM mode.
"""
import functools
from typing import NamedTuple

import ale_py
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn.games import space_invaders as si

gymnasium.register_envs(ale_py)

SEED = 0
NUM_STEPS = 840  # agent steps: the ship flies over steps ~240-390, the shields vanish at ~770
FRAME_SKIP = 4
SCREEN_EVERY = 3  # keep the frames of every 3rd agent step (RAM is kept for all)
ODD, EVEN = 0, 1  # index of frames 4t - 1 and 4t (the one an ALE env at frame skip 4 returns)
# Pixel classes, by the colour ale-py renders them in (OCAtari's colours, but for the cannon: OCAtari's
# (92, 186, 92) is not in ale-py's palette, the cannon and player 1's score are drawn in (50, 132, 50)).
BACKGROUND, PLAYER, ALIEN, SHIELD, BULLET, SHIP = range(6)
COLOURS = {PLAYER: (50, 132, 50), ALIEN: (134, 134, 29), SHIELD: (181, 83, 40), BULLET: (142, 142, 142),
           SHIP: (151, 25, 122)}
PLAY_FIELD = slice(20, 195)  # rows below the score and above the ground
KILL_EXPLOSION_STEPS = 10  # a shot alien's explosion stays on screen for up to ~8 agent steps


class Recording(NamedTuple):
    ram: np.ndarray  # [T, 2, 128] uint8, RAM after frames 4t - 1 and 4t of agent step t (t = 0: reset)
    steps: np.ndarray  # [S] int, the agent steps whose frames were kept
    labels: np.ndarray  # [S, 2, 210, 160] uint8 pixel class of frames 4t - 1 and 4t of those steps
    reward: np.ndarray  # [T] float, the game's reward of each agent step (0 at reset)
    lives: np.ndarray  # [T] int, ale.lives() after each agent step


def pixel_classes(rgb):
    """[210, 160, 3] uint8 frame -> [210, 160] uint8 class (BACKGROUND for any other colour)."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for label, (r, g, b) in COLOURS.items():
        labels[packed == (r << 16 | g << 8 | b)] = label
    return labels


def policy(rng, ram, ram_previous):
    """Mostly FIRE and moves; step aside when an enemy bullet (its y byte moving) comes down over the cannon."""
    cannon_x = int(ram[28])
    for i in range(2):
        y_byte, x_byte = int(ram[81 + i]), int(ram[83 + i])
        if y_byte != ram_previous[81 + i] and 2 * y_byte + 3 > 110 and abs(x_byte - cannon_x - 3) < 8:
            return 3 if x_byte > cannon_x + 2 else 2  # LEFT / RIGHT
    return int(rng.choice(6, p=[0.05, 0.35, 0.1, 0.1, 0.2, 0.2]))  # NOOP FIRE RIGHT LEFT RIGHTFIRE LEFTFIRE


@pytest.fixture(scope="module")
def recording():
    env = gymnasium.make("ALE/SpaceInvaders-v5", obs_type="ram", frameskip=1, repeat_action_probability=0.0,
                         full_action_space=False)
    ram, _ = env.reset(seed=SEED)
    ale = env.unwrapped.ale
    rng = np.random.default_rng(SEED)
    rams, steps, labels, rewards, lives = [np.stack([ram, ram])], [], [], [0.0], [ale.lives()]
    for t in range(1, NUM_STEPS + 1):
        action = policy(rng, rams[-1][EVEN], rams[-2][EVEN] if t > 1 else rams[-1][EVEN])
        pair, frames, reward = [], [], 0.0
        for frame in range(FRAME_SKIP):
            ram, frame_reward, terminated, truncated, _ = env.step(action)
            reward += frame_reward
            if frame >= FRAME_SKIP - 2:
                pair.append(ram)
                if t % SCREEN_EVERY == 0:
                    frames.append(pixel_classes(ale.getScreenRGB()))
        assert not (terminated or truncated), f"the recorded episode ended at step {t}"
        rams.append(np.stack(pair))
        rewards.append(reward)
        lives.append(ale.lives())
        if frames:
            steps.append(t)
            labels.append(np.stack(frames))
    env.close()
    return Recording(np.stack(rams), np.array(steps), np.stack(labels), np.array(rewards), np.array(lives))


@pytest.fixture(scope="module")
def decoded(recording):
    """Both frame phases decoded, each snapshot against the one an agent step (4 frames) before it: a list
    [ODD, EVEN] of dicts of [T - 1, ...] arrays (entry t - 1 for agent step t)."""
    decode = jax.jit(si.decode)
    out = []
    for phase in (ODD, EVEN):
        ram = jnp.asarray(recording.ram[:, phase])
        out.append({k: np.asarray(v) for k, v in decode(ram[1:], ram[:-1])._asdict().items()})
    return out


def kept_frames(recording, decoded, phase):
    """(t, labels [210, 160], objects of step t) for the kept frames of one phase."""
    for i, t in enumerate(recording.steps):
        yield t, recording.labels[i, phase], {k: v[t - 1] for k, v in decoded[phase].items()}


def box(mask, x, y, width, height, margin):
    """The part of a [210, 160] mask inside an object's box widened by `margin` px on each side."""
    x, y = int(x), int(y)
    return mask[max(y - margin, 0):max(y + height + margin, 0), max(x - margin, 0):max(x + width + margin, 0)]


def test_decode_same_jitted_and_eager(recording, decoded):
    ram = jnp.asarray(recording.ram[:, EVEN])
    eager = si.decode(ram[1:], ram[:-1])
    for name, value in eager._asdict().items():
        np.testing.assert_array_equal(np.asarray(value), decoded[EVEN][name], err_msg=name)


def test_recording_covers_every_object_class(recording, decoded):
    even, odd = decoded[EVEN], decoded[ODD]
    assert even["player_bullet_visible"].any() and odd["enemy_bullets_visible"].any()
    assert even["mystery_ship_visible"].any()
    assert even["alien_alive"].sum(axis=(1, 2)).min() < 30  # aliens were shot ...
    assert even["alien_y"][:, 0].max() >= 31 + 2 * 15  # ... and descended past the shields' removal
    assert even["shield_pixels"].any(axis=(1, 2, 3)).any() and not even["shield_pixels"].any(axis=(1, 2, 3)).all()
    assert recording.lives.min() < recording.lives[0]  # a life was lost


def test_player_drawn_at_decoded_x(recording, decoded):
    drawn = 0
    for _, labels, objects in kept_frames(recording, decoded, EVEN):
        ys, xs = np.nonzero(labels[180:195] == PLAYER)
        if len(xs) == 0:  # exploding, or blinking after a new life
            continue
        drawn += 1
        assert xs.min() == objects["player_x"] and ys.min() + 180 == si.PLAYER_Y
        assert si.PLAYER_SIZE[0] <= xs.max() - xs.min() + 1 <= si.PLAYER_SIZE[0] + 1
        assert ys.max() - ys.min() + 1 == si.PLAYER_SIZE[1]
    assert drawn >= 0.9 * len(recording.steps)


def test_every_alive_alien_drawn_in_its_box_and_no_other_alien_pixels(recording, decoded):
    num_alive = decoded[EVEN]["alien_alive"].sum(axis=(1, 2))
    kills = np.nonzero(np.diff(num_alive) < 0)[0] + 2  # agent steps at which an alien was shot
    checked = 0
    for t, labels, objects in kept_frames(recording, decoded, EVEN):
        aliens = labels == ALIEN
        covered = np.zeros_like(aliens)
        for row, col in zip(*np.nonzero(objects["alien_alive"])):
            x, y = int(objects["alien_x"][col]), int(objects["alien_y"][row])
            ys, xs = np.nonzero(box(aliens, x, y, *si.ALIEN_SIZE, margin=0))
            assert len(xs), f"step {t}: alien (row {row}, column {col}) at ({x}, {y}) not drawn"
            assert xs.min() == 0 and ys.min() <= 1, (t, row, col)  # a sprite may leave its top row blank
            covered[max(y - 1, 0):y + si.ALIEN_SIZE[1] + 1, max(x - 1, 0):x + si.ALIEN_SIZE[0] + 1] = True
        if ((t - kills >= 0) & (t - kills < KILL_EXPLOSION_STEPS)).any():
            continue  # the shot alien's explosion is drawn where no alive alien is
        checked += 1
        assert not (aliens & ~covered).any(), f"step {t}: alien pixels outside every decoded alien"
    assert checked >= 0.7 * len(recording.steps)


def test_shields_pixels_match_and_vanish_with_the_game(recording, decoded):
    with_shields = without = 0
    for t, labels, objects in kept_frames(recording, decoded, EVEN):
        expected = np.zeros(labels.shape, bool)
        pixels = np.repeat(objects["shield_pixels"], 2, axis=1)  # [3, 18, 8]: each RAM row is 2 px tall
        for i, x in enumerate(si.SHIELD_X):
            expected[si.SHIELD_Y:si.SHIELD_Y + si.SHIELD_SIZE[1], x:x + si.SHIELD_SIZE[0]] = pixels[i]
        drawn = labels == SHIELD
        # A bullet hitting a shield erodes the RAM a frame before the screen: allow a few pixels.
        assert (drawn != expected).sum() <= 8, f"step {t}: {(drawn != expected).sum()} shield pixels differ"
        with_shields += drawn.any()
        without += not expected.any()
    assert with_shields and without


def area_average(mask):
    """[210, 160] pixel mask -> [38, 40] share of each 4 x 5 px cell of the box grid (rows from PLANE_TOP)."""
    rows, cols = si.BOX_SHAPE
    field = mask[si.PLANE_TOP:si.PLANE_TOP + rows * si.BOX_CELL[1], :cols * si.BOX_CELL[0]].astype(np.float64)
    return field.reshape(rows, si.BOX_CELL[1], cols, si.BOX_CELL[0]).mean(axis=(1, 3))


def test_box_planes_are_the_decoded_boxes_averaged_over_cells(recording, decoded):
    """Each channel of `object_boxes` equals its class's boxes drawn on the 160 x 210 screen (a count per pixel,
    clipped to 1 per cell) and averaged over the 4 x 5 px cells; the shields channel also equals the shield
    pixels ale-py renders, averaged the same way (to the few pixels a hit erodes a frame early)."""
    steps = recording.steps
    objects = si.SpaceInvadersObjects(**{k: jnp.asarray(v[steps - 1]) for k, v in decoded[EVEN].items()})
    planes = np.asarray(jax.jit(si.object_boxes)(objects))
    assert planes.shape == (len(steps),) + si.BOX_SHAPE + (len(si.PLANE_CLASSES),)
    for i, (t, labels, obj) in enumerate(kept_frames(recording, decoded, EVEN)):
        masks = np.zeros((len(si.PLANE_CLASSES), 210, 160), np.int32)

        def draw(channel, x, y, size):
            x, y = int(x), int(y)
            masks[channel, max(y, 0):max(y + size[1], 0), max(x, 0):max(x + size[0], 0)] += 1

        draw(0, obj["player_x"], si.PLAYER_Y, si.PLAYER_SIZE)
        for row, col in zip(*np.nonzero(obj["alien_alive"])):
            draw(1, obj["alien_x"][col], obj["alien_y"][row], si.ALIEN_SIZE)
        if obj["player_bullet_visible"]:
            draw(2, *obj["player_bullet"], si.BULLET_SIZE)
        for (x, y), visible in zip(obj["enemy_bullets"], obj["enemy_bullets_visible"]):
            if visible:
                draw(3, x, y, si.BULLET_SIZE)
        for s, r, p in zip(*np.nonzero(obj["shield_pixels"])):
            draw(4, si.SHIELD_X[s] + p, si.SHIELD_Y + 2 * r, (1, 2))
        if obj["mystery_ship_visible"]:
            draw(5, obj["mystery_ship_x"], si.MYSTERY_SHIP_Y, si.MYSTERY_SHIP_SIZE)
        for channel in range(len(si.PLANE_CLASSES)):
            # a box's pixels per cell, each cell's share clipped to 1 as the planes are (two boxes may overlap)
            expected = np.minimum(area_average(masks[channel]), 1.0)
            np.testing.assert_allclose(planes[i, ..., channel], expected, atol=1e-5,
                                       err_msg=f"step {t}, {si.PLANE_CLASSES[channel]}")
        rendered = area_average(labels == SHIELD)
        assert np.abs(planes[i, ..., 4] - rendered).sum() * 20 <= 8, f"step {t}: shield pixels differ"
    assert planes[..., 1].sum(axis=(1, 2)).min() > 0 and planes[..., 4].any() and planes[..., 5].any()


def assert_bullet_drawn(bullets, x, y, what, tolerance=3):
    """Bullet pixels near (x, y) exist, all in column x and in rows [y - tolerance, y + 10] (the sprite's height
    changes as it flies: its drawn top is up to 3 px above or 6 px below y, its bottom never below y + 10)."""
    x, y = int(x), int(y)
    top, left = max(y - 2 * tolerance, 0), max(x - 2 * tolerance, 0)
    ys, xs = np.nonzero(bullets[top:y + si.BULLET_SIZE[1] + 2 * tolerance, left:x + 2 * tolerance + 1])
    assert len(xs), f"{what} at ({x}, {y}) is not drawn"
    ys, xs = ys + top - y, xs + left - x  # relative to (x, y)
    assert (xs == 0).all() and ys.min() >= -tolerance and ys.max() <= si.BULLET_SIZE[1], (what, x, y, xs, ys)


def test_player_bullet_drawn_at_decoded_position_on_even_frames(recording, decoded):
    visible = explained = drawn = 0
    for t, labels, objects in kept_frames(recording, decoded, EVEN):
        bullets = np.zeros(labels.shape, bool)
        bullets[PLAY_FIELD] = labels[PLAY_FIELD] == BULLET
        drawn += bullets.sum()
        if objects["player_bullet_visible"]:
            visible += 1
            x, y = objects["player_bullet"]
            assert_bullet_drawn(bullets, x, y, f"step {t}: player bullet")
            explained += box(bullets, x, y, *si.BULLET_SIZE, margin=3).sum()
    assert visible >= 20
    # The rest: a bullet's last frame, drawn once more after its bytes already say it is gone.
    assert explained >= 0.9 * drawn, (explained, drawn)


def test_enemy_bullets_drawn_at_decoded_positions_on_odd_frames_only(recording, decoded):
    visible = on_even_frames = 0
    for t, labels, objects in kept_frames(recording, decoded, ODD):
        bullets = labels == BULLET
        for i in np.nonzero(objects["enemy_bullets_visible"])[0]:
            x, y = objects["enemy_bullets"][i]
            behind = np.isin(box(labels, x, y, *si.BULLET_SIZE, margin=0), [PLAYER, ALIEN]).any()
            if behind or y >= PLAY_FIELD.stop - 4:
                continue  # hidden by the cannon or by the alien dropping it, or at most a pixel above the ground
            visible += 1
            assert_bullet_drawn(bullets, x, y, f"step {t}: enemy bullet {i}")
    for t, labels, objects in kept_frames(recording, decoded, EVEN):
        for i in np.nonzero(objects["enemy_bullets_visible"])[0]:
            x, y = objects["enemy_bullets"][i]
            near_player_bullet = objects["player_bullet_visible"] and abs(objects["player_bullet"][0] - x) <= 3
            on_even_frames += box(labels == BULLET, x, y, *si.BULLET_SIZE, margin=0).any() and not near_player_bullet
    assert visible >= 20
    assert on_even_frames <= 2  # so an agent at frame skip 4 never sees them on screen


def test_mystery_ship_drawn_while_its_x_byte_moves(recording, decoded):
    shown = 0
    for t, labels, objects in kept_frames(recording, decoded, EVEN):
        ys, xs = np.nonzero(labels[:30] == SHIP)
        if not objects["mystery_ship_visible"]:
            # Nothing, or the ship's explosion once shot (its x byte stops; drawn from row 11, 8 x 10 px).
            assert not len(xs) or ys.min() == si.MYSTERY_SHIP_Y - 1, f"step {t}: the ship is drawn"
            continue
        assert len(xs), f"step {t}: the ship is not drawn"
        shown += 1
        assert xs.min() == objects["mystery_ship_x"] and abs(ys.min() - si.MYSTERY_SHIP_Y) <= 1, t
        assert 0 <= xs.max() - xs.min() + 1 - si.MYSTERY_SHIP_SIZE[0] <= 1, t
        assert 0 <= ys.max() - ys.min() + 1 - si.MYSTERY_SHIP_SIZE[1] <= 2, t
    assert shown >= 20


def test_score_and_lives_match_the_ale(recording, decoded):
    np.testing.assert_array_equal(decoded[EVEN]["score"], np.cumsum(recording.reward)[1:])
    np.testing.assert_array_equal(decoded[EVEN]["lives"], recording.lives[1:])
    assert recording.reward.sum() > 0


def ram_with(bytes_at):
    """[128] uint8 RAM, zero but for {index: value}."""
    ram = np.zeros(si.NUM_RAM_BYTES, np.uint8)
    ram[list(bytes_at)] = list(bytes_at.values())
    return ram


def test_bullet_visible_only_while_its_y_byte_moves_inside_the_field():
    ram_tm1 = ram_with({81: 40, 82: 90, 85: 60, 83: 50, 84: 70, 87: 30})
    ram_t = ram_with({81: 40, 82: 96, 85: 56, 83: 50, 84: 70, 87: 30})  # enemy bullet 0 unchanged
    objects = si.decode(jnp.asarray(ram_t), jnp.asarray(ram_tm1))
    assert bool(objects.player_bullet_visible)
    np.testing.assert_array_equal(objects.player_bullet, [28, 2 * 56 + 3])
    np.testing.assert_array_equal(objects.enemy_bullets_visible, [False, False])  # 96 -> y = 195: in the ground
    ram_t[82] = 94  # y = 191: still above the ground
    objects = si.decode(jnp.asarray(ram_t), jnp.asarray(ram_tm1))
    np.testing.assert_array_equal(objects.enemy_bullets_visible, [False, True])
    np.testing.assert_array_equal(objects.enemy_bullets, [[48, 83], [68, 191]])
    ram_t[85] = 8  # y = 19: above the field
    assert not bool(si.decode(jnp.asarray(ram_t), jnp.asarray(ram_tm1)).player_bullet_visible)
    objects = si.decode(jnp.asarray(ram_t), jnp.asarray(ram_t))  # no previous snapshot: nothing moves
    assert not (objects.player_bullet_visible or objects.enemy_bullets_visible.any() or objects.mystery_ship_visible)


def test_decode_by_hand():
    """One alien (bottom row, second column of the block), the cannon, the ship, one shield row, score 1234."""
    ram_tm1 = ram_with({16: 5, 19: 0b10, 24: 0x50, 26: 30, 28: 50, 30: 99, 43: 0b11000000, 73: 2, 102: 0x12,
                        104: 0x34})
    ram_t = ram_tm1.copy()
    ram_t[30] = 97
    objects = si.decode(jnp.asarray(ram_t), jnp.asarray(ram_tm1))
    alive = np.zeros((6, 6), bool)
    alive[4, 1] = True  # ram[19] is the second row from the bottom
    np.testing.assert_array_equal(objects.alien_alive, alive)
    assert objects.alien_x[1] == 30 - 1 + 16 and objects.alien_y[4] == 31 + 2 * 5 + 18 * 4
    assert objects.player_x == 49 and bool(objects.mystery_ship_visible) and objects.mystery_ship_x == 96
    np.testing.assert_array_equal(objects.shield_pixels[0, 0], [1, 1, 0, 0, 0, 0, 0, 0])  # MSB leftmost
    assert objects.shield_pixels.sum() == 2 and objects.lives == 2 and objects.score == 1234
    ram_t[24] = 0x10  # the game has removed the shields
    assert not si.decode(jnp.asarray(ram_t), jnp.asarray(ram_tm1)).shield_pixels.any()


@pytest.mark.parametrize("num_frames", [2, 4])
def test_encoders_shapes_and_dtypes_under_jit_and_vmap(recording, num_frames):
    stacks = np.stack([np.concatenate(recording.ram[t - num_frames + 1:t + 1, EVEN]) for t in range(300, 304)])
    assert stacks.shape == (4, 128 * num_frames)
    plane_shape = si.PLANE_SHAPE + (len(si.PLANE_CLASSES) * (num_frames - 1),)
    bilinear_planes = functools.partial(si.encode_planes, bilinear=True)
    box_shape = si.BOX_SHAPE + plane_shape[-1:]
    ego_planes = functools.partial(si.encode_planes, egocentric=True)
    ego_shape = si.EGO_SHAPE + (len(si.EGO_CLASSES) * (num_frames - 1),)
    for encode, shape in ((si.encode_objects, (si.OBJECT_FEATURES,)), (si.encode_planes, plane_shape),
                          (bilinear_planes, plane_shape), (si.encode_box_planes, box_shape), (ego_planes, ego_shape)):
        batched = jax.jit(encode)(stacks)
        vmapped = jax.jit(jax.vmap(encode))(stacks)
        assert batched.shape == vmapped.shape == (4,) + shape
        assert batched.dtype == vmapped.dtype == jnp.float32 and np.isfinite(batched).all()
        np.testing.assert_allclose(vmapped, batched, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("encode", [si.encode_objects, si.encode_planes, si.encode_box_planes, si.decode_stack])
def test_encoders_need_two_snapshots(encode):
    with pytest.raises(ValueError, match="K >= 2"):
        encode(np.zeros((3, 128), np.uint8))
    with pytest.raises(ValueError, match="K >= 2"):
        encode(np.zeros((3, 200), np.uint8))


def test_matches_ocatari_ram_mode():
    """Our objects against OCAtari's RAM mode (``ocatari.core.OCAtari(mode="ram")``), step by step.

    Same player, aliens and mystery ship position. Bullets: OCAtari decides a bullet's visibility from its
    position alone (one step late, and until row 195), so its bullets must be at positions we decode and most of
    our visible bullets must be among them. Shields are not compared: OCAtari removes them once an alien's
    bottom reaches row 157, which misses the game's own rule when the bottom rows are empty."""
    ocatari_core = pytest.importorskip("ocatari.core", reason="ocatari is not installed (optional)")
    env = ocatari_core.OCAtari("ALE/SpaceInvaders-v5", mode="ram", hud=False, frameskip=FRAME_SKIP,
                               repeat_action_probability=0.0, full_action_space=False)
    env.reset(seed=SEED)
    ale = env._env.unwrapped.ale
    rng = np.random.default_rng(SEED)
    ram_previous = ram = ale.getRAM().copy()
    decode = jax.jit(si.decode)
    ship_steps = our_bullets = shared_bullets = 0
    for t in range(1, 401):
        env.step(policy(rng, ram, ram_previous))
        ram_previous, ram = ram, ale.getRAM().copy()
        objects = jax.tree.map(np.asarray, decode(ram, ram_previous))
        theirs = {}
        for obj in env.objects:
            if obj:  # skips None and OCAtari's invisible placeholders
                theirs.setdefault(obj.category, []).append(tuple(int(v) for v in obj.xy))
        assert theirs["Player"] == [(objects.player_x, si.PLAYER_Y)], t
        ours = {(objects.alien_x[c], objects.alien_y[r]) for r, c in zip(*np.nonzero(objects.alien_alive))}
        assert sorted(theirs.get("Alien", [])) == sorted(ours), t
        if objects.mystery_ship_visible:
            ship_steps += 1
            assert theirs.get("Satellite") == [(objects.mystery_ship_x, si.MYSTERY_SHIP_Y)], t
        positions = [tuple(xy) for xy in np.concatenate([objects.enemy_bullets, objects.player_bullet[None]])]
        visible = np.append(objects.enemy_bullets_visible, objects.player_bullet_visible)
        # OCAtari computes y in uint8 (2 * 246 + 3 wraps to 239, 2 * 127 + 3 to 1): only its bullets in the
        # field count.
        low, high = si.BULLET_Y_RANGE
        their_bullets = {xy for xy in theirs.get("Bullet", []) if low < xy[1] < high}
        assert their_bullets <= set(positions), t
        our_bullets += visible.sum()
        shared_bullets += sum(xy in their_bullets for xy, v in zip(positions, visible) if v)
    env.close()
    assert ship_steps and our_bullets and shared_bullets >= 0.8 * our_bullets, (ship_steps, our_bullets,
                                                                                   shared_bullets)
