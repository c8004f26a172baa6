"""Space Invaders: decode the 128-byte Atari RAM into game objects, in pure JAX (jit / vmap, no Python per step).

The byte map follows OCAtari's RAM mode (``k4ntz/OC_Atari``, ``ocatari/ram/spaceinvaders.py``), checked
against ale-py's rendered frames (``tests/test_space_invaders_decoder.py``). AtariARI's annotations
(``mila-iqia/atari-representation-learning``) give ram[24] as the aliens' y; it is not: ram[24] is a flags
byte (80-83 while the shields are drawn, 16-19 after, 144-145 once the game is lost) and the aliens' rows follow
ram[16] as below. Pixel coordinates are those of the
160 x 210 screen, x to the right, y down, each object's top-left corner:

=========================  ==========================================================================
player                     x = ram[28] - 1, y = 185 (7 x 10 px)
aliens (6 rows x 6 cols)   row bit-masks ram[18:24] (ram[18] the bottom row), bit b at
                           x = ram[26] - 1 + 16 b (bit 0 leftmost); row r (0 = top) at
                           y = 31 + 2 ram[16] + 18 r (8 x 10 px; ram[16] steps by 5 as the block
                           descends). When a block's leftmost column is cleared the game shifts every
                           mask right by one bit and adds 16 to ram[26], so bit 0 is always the
                           leftmost column still alive.
shields (3)                ram[43:70]: 9 bytes per shield, one per 2-pixel row (top first), most
                           significant bit = leftmost pixel; shield i at x = 42 + 32 i, y = 157
                           (8 x 18 px). Drawn only while bit 6 of ram[24] is set: the game removes the
                           shields once the aliens descend to ram[16] >= 15 (the bytes keep their values).
player bullet              x = ram[87] - 2, y = 2 ram[85] + 3 (1 px wide; drawn top 0-2 px lower)
enemy bullets (2)          x = ram[83 + i] - 2, y = 2 ram[81 + i] + 3 (drawn top 0-6 px lower)
mystery ship               x = ram[30] - 1, y = 12 (7 x 8 px); ram[30] = 180 (off screen) between passes
lives, score               ram[73]; BCD digits ram[102] (thousands, hundreds) and ram[104] (tens, ones)
=========================  ==========================================================================

A bullet's bytes keep their last value when no bullet is in flight, so (as in OCAtari) a bullet is visible
only when its y byte changed since the previous snapshot and its top lies inside the play field
(``BULLET_Y_RANGE``: an enemy bullet whose top reaches row 193 has hit the ground and is no longer drawn); the
mystery ship likewise only while its x byte moves and lies on screen. Decoding therefore takes two consecutive
snapshots.

The game draws the player's bullet on even frames and the enemy bullets on odd frames only, so the frame an
ALE environment returns with frame skip 4 (the last, even, one) never shows an enemy bullet, although the
RAM holds it (the reason Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning", used a frame
skip of 3 for Space Invaders). The positions above match frame 4t for the player's bullet and frame 4t - 1
for the enemy bullets; the player, the aliens (whose sprites may leave their top row blank), the shields and the
mystery ship match frame 4t to the pixel.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl.dqn.envs.atari import NUM_RAM_BYTES
SCREEN_WIDTH = 160
SCREEN_HEIGHT = 210
NUM_ALIEN_ROWS = 6
NUM_ALIEN_COLS = 6
NUM_SHIELDS = 3
SHIELD_ROWS = 9
PLAYER_Y = 185
PLAYER_SIZE = (7, 10)  # (width, height) px
ALIEN_SIZE = (8, 10)
SHIELD_SIZE = (8, 18)
SHIELD_Y = 157
SHIELD_X = (42, 74, 106)
MYSTERY_SHIP_Y = 12
MYSTERY_SHIP_SIZE = (7, 8)
BULLET_SIZE = (1, 10)
# A bullet counts as on screen when its top lies strictly between these rows (OCAtari's lower bound; below
# row 193 an enemy bullet is hidden by the ground, which starts at row 195).
BULLET_Y_RANGE = (20, 193)
SHIELDS_DRAWN_BIT = 0x40  # of ram[24]


class SpaceInvadersObjects(NamedTuple):
    """The objects of one snapshot (leading dims ``...`` as the RAM's), in screen pixels (float32)."""

    player_x: jax.Array  # [...] left edge; the player's top is PLAYER_Y
    alien_alive: jax.Array  # [..., 6, 6] bool, row 0 = top, column 0 = the leftmost column still alive
    alien_x: jax.Array  # [..., 6] left edge of each column
    alien_y: jax.Array  # [..., 6] top of each row
    shield_pixels: jax.Array  # [..., 3, 9, 8] bool, each shield's rows (2 px tall, top first) x 8 pixel columns;
    #                           all False once the game has removed the shields
    player_bullet: jax.Array  # [..., 2] (x, y) top-left
    player_bullet_visible: jax.Array  # [...] bool
    enemy_bullets: jax.Array  # [..., 2, 2] (x, y) of each enemy bullet
    enemy_bullets_visible: jax.Array  # [..., 2] bool
    mystery_ship_x: jax.Array  # [...] left edge; its top is MYSTERY_SHIP_Y
    mystery_ship_visible: jax.Array  # [...] bool
    lives: jax.Array  # [...] int32
    score: jax.Array  # [...] int32, player 1's score

    @property
    def num_aliens(self) -> jax.Array:
        """[...] int32, aliens alive."""
        return jnp.sum(self.alien_alive, axis=(-2, -1), dtype=jnp.int32)


def _bits(byte: jax.Array, num_bits: int) -> jax.Array:
    """[...] integer -> [..., num_bits] bool, least significant bit first."""
    return ((byte[..., None].astype(jnp.int32) >> jnp.arange(num_bits)) & 1).astype(bool)


def _bcd(byte: jax.Array) -> jax.Array:
    byte = byte.astype(jnp.int32)
    return (byte >> 4) * 10 + (byte & 0xF)


def _in_field(y: jax.Array) -> jax.Array:
    return (y > BULLET_Y_RANGE[0]) & (y < BULLET_Y_RANGE[1])


def decode(ram_t: jax.Array, ram_tm1: jax.Array) -> SpaceInvadersObjects:
    """Decode the snapshot ``ram_t``, given the snapshot before it (for bullets and the mystery ship).

    Args:
      ram_t: [..., 128] uint8 RAM.
      ram_tm1: [..., 128] uint8 RAM of the previous agent step (pass ``ram_t`` itself when there is none:
        bullets and the ship are then reported invisible).

    Returns:
      SpaceInvadersObjects with leading dims ``...``.
    """
    assert ram_t.shape[-1] == NUM_RAM_BYTES and ram_tm1.shape == ram_t.shape, (ram_t.shape, ram_tm1.shape)
    ram = ram_t.astype(jnp.int32)
    prev = ram_tm1.astype(jnp.int32)
    f32 = jnp.float32
    # Rows in RAM run bottom (ram[18]) to top (ram[23]); flip so that row 0 is the top row.
    alive = _bits(ram[..., 18:24], NUM_ALIEN_COLS)[..., ::-1, :]
    alien_x = (ram[..., 26:27] - 1 + 16 * jnp.arange(NUM_ALIEN_COLS)).astype(f32)
    alien_y = (31 + 2 * ram[..., 16:17] + 18 * jnp.arange(NUM_ALIEN_ROWS)).astype(f32)
    shields = _bits(ram[..., 43:70], 8)[..., ::-1]  # most significant bit = leftmost pixel
    shields = shields.reshape(ram.shape[:-1] + (NUM_SHIELDS, SHIELD_ROWS, 8))
    shields_drawn = (ram[..., 24] & SHIELDS_DRAWN_BIT) != 0
    shields = shields & shields_drawn[..., None, None, None]

    def bullet(x_byte, y_byte):
        xy = jnp.stack([ram[..., x_byte] - 2, 2 * ram[..., y_byte] + 3], axis=-1).astype(f32)
        visible = (ram[..., y_byte] != prev[..., y_byte]) & _in_field(xy[..., 1])
        return xy, visible

    player_bullet, player_bullet_visible = bullet(87, 85)
    enemy = [bullet(83 + i, 81 + i) for i in range(2)]
    return SpaceInvadersObjects(
        player_x=(ram[..., 28] - 1).astype(f32),
        alien_alive=alive,
        alien_x=alien_x,
        alien_y=alien_y,
        shield_pixels=shields,
        player_bullet=player_bullet,
        player_bullet_visible=player_bullet_visible,
        enemy_bullets=jnp.stack([xy for xy, _ in enemy], axis=-2),
        enemy_bullets_visible=jnp.stack([v for _, v in enemy], axis=-1),
        mystery_ship_x=(ram[..., 30] - 1).astype(f32),
        # The ship is parked off screen at ram[30] = 180 between its passes.
        mystery_ship_visible=(ram[..., 30] != prev[..., 30]) & (ram[..., 30] - 1 < SCREEN_WIDTH),
        lives=ram[..., 73],
        score=_bcd(ram[..., 102]) * 100 + _bcd(ram[..., 104]),
    )


def decode_stack(obs: jax.Array) -> SpaceInvadersObjects:
    """Decode the last K - 1 snapshots of a stack of K, each against the snapshot before it.

    Args:
      obs: [..., K * 128] uint8, K >= 2 RAM snapshots, oldest first (``--frame-stack K``).

    Returns:
      SpaceInvadersObjects with leading dims ``[..., K - 1]`` (the newest last).
    """
    frames = _snapshots(obs)
    return decode(frames[..., 1:, :], frames[..., :-1, :])


def _snapshots(obs: jax.Array) -> jax.Array:
    """[..., K * 128] -> [..., K, 128], K >= 2 (a ValueError otherwise)."""
    num_frames = obs.shape[-1] // NUM_RAM_BYTES
    if obs.shape[-1] % NUM_RAM_BYTES or num_frames < 2:
        raise ValueError(f"decoding Space Invaders objects needs K >= 2 stacked RAM snapshots ([..., K * 128] "
                         f"bytes: bullets are seen as changes between snapshots), got {obs.shape[-1]} bytes")
    return obs.reshape(obs.shape[:-1] + (num_frames, NUM_RAM_BYTES))


# -- encodings for the Q-network --------------------------------------------------------------------------
OBJECT_FEATURES = 82  # length of `object_features`' vector


def object_features(objects: SpaceInvadersObjects, previous: SpaceInvadersObjects) -> jax.Array:
    """An egocentric feature vector of one decoded snapshot (positions relative to the player).

    Distances are in screen widths / heights (dx = (object centre - player centre) / 160, dy = (player top -
    object bottom) / 210, so a bullet about to hit the player has dy near 0); flags are 0 / 1.

    Args:
      objects: the snapshot to encode, leading dims ``...``.
      previous: the snapshot before it (for the player's and the aliens' motion), same dims.

    Returns:
      [..., OBJECT_FEATURES] float32: player x (1); per alien column: any alive, bottom of its lowest alive
      alien, dx (18); the 36 alive flags (36); aliens alive / 36, block x, block top (3); player bullet: visible,
      dx, y (3); each enemy bullet: visible, dx, dy (6) and the nearer visible one's |dx|, dy, visible (3);
      mystery ship: visible, dx (2); each shield: pixels left / 144, dx (6); lives / 3 (1); motion of the
      player and the alien block since the previous snapshot, in pixels / 8 (3).
    """
    f32 = jnp.float32
    width, height = float(SCREEN_WIDTH), float(SCREEN_HEIGHT)
    player_cx = objects.player_x + PLAYER_SIZE[0] / 2
    player_top = float(PLAYER_Y)

    def dx(x_left, w):
        return (x_left + w / 2 - player_cx[..., None] if jnp.ndim(x_left) > jnp.ndim(player_cx)
                else x_left + w / 2 - player_cx) / width

    alive = objects.alien_alive  # [..., 6, 6]
    column_any = jnp.any(alive, axis=-2)  # [..., 6]
    lowest_row = NUM_ALIEN_ROWS - 1 - jnp.argmax(alive[..., ::-1, :], axis=-2)  # [..., 6]
    column_bottom = jnp.take_along_axis(objects.alien_y, lowest_row, axis=-1) + ALIEN_SIZE[1]
    column_bottom = jnp.where(column_any, column_bottom / height, 0.0)
    column_dx = dx(objects.alien_x, ALIEN_SIZE[0]) * column_any

    bullet_visible = objects.player_bullet_visible.astype(f32)
    player_bullet = [bullet_visible, dx(objects.player_bullet[..., 0], 1) * bullet_visible,
                     objects.player_bullet[..., 1] / height * bullet_visible]
    enemy_visible = objects.enemy_bullets_visible.astype(f32)  # [..., 2]
    enemy_dx = dx(objects.enemy_bullets[..., 0], 1) * enemy_visible
    enemy_dy = (player_top - objects.enemy_bullets[..., 1] - BULLET_SIZE[1]) / height * enemy_visible
    # The nearer visible enemy bullet (by |dx| + |dy|); invisible bullets count as far away.
    distance = jnp.where(objects.enemy_bullets_visible, jnp.abs(enemy_dx) + jnp.abs(enemy_dy), jnp.inf)
    nearest = jnp.argmin(distance, axis=-1)[..., None]
    nearest_features = [jnp.take_along_axis(jnp.abs(enemy_dx), nearest, -1)[..., 0],
                        jnp.take_along_axis(enemy_dy, nearest, -1)[..., 0], jnp.max(enemy_visible, axis=-1)]
    ship_visible = objects.mystery_ship_visible.astype(f32)
    shield_left = jnp.sum(objects.shield_pixels, axis=(-2, -1)).astype(f32) / (SHIELD_ROWS * 8 * 2)
    shield_dx = jnp.broadcast_to(jnp.asarray(SHIELD_X, f32) + SHIELD_SIZE[0] / 2, shield_left.shape)
    shield_dx = (shield_dx - player_cx[..., None]) / width
    features = [
        (objects.player_x / width)[..., None],
        column_any.astype(f32), column_bottom, column_dx,
        alive.reshape(alive.shape[:-2] + (36,)).astype(f32),
        jnp.stack([objects.num_aliens / 36.0, objects.alien_x[..., 0] / width, objects.alien_y[..., 0] / height],
                  axis=-1).astype(f32),
        jnp.stack(player_bullet, axis=-1),
        jnp.stack([enemy_visible, enemy_dx, enemy_dy], axis=-1).reshape(enemy_dx.shape[:-1] + (6,)),
        jnp.stack(nearest_features, axis=-1),
        jnp.stack([ship_visible, dx(objects.mystery_ship_x, MYSTERY_SHIP_SIZE[0]) * ship_visible], axis=-1),
        shield_left, shield_dx,
        (objects.lives / 3.0)[..., None].astype(f32),
        jnp.stack([objects.player_x - previous.player_x, objects.alien_x[..., 0] - previous.alien_x[..., 0],
                   objects.alien_y[..., 0] - previous.alien_y[..., 0]], axis=-1) / 8.0,
    ]
    out = jnp.concatenate([jnp.asarray(f, f32) for f in features], axis=-1)
    assert out.shape[-1] == OBJECT_FEATURES, out.shape
    return out


def encode_objects(obs: jax.Array) -> jax.Array:
    """``--obs-encoding objects``: [..., K * 128] uint8 (K >= 2) -> [..., OBJECT_FEATURES] float32.

    The newest snapshot, decoded against the one before it; motion is measured against that one too.
    """
    frames = _snapshots(obs)
    num_frames = frames.shape[-2]
    newest = decode(frames[..., -1, :], frames[..., -2, :])
    previous = decode(frames[..., -2, :], frames[..., max(num_frames - 3, 0), :])
    return object_features(newest, previous)


# Planes: a coarse grid over the play field, one channel per object class.
PLANE_CELL = (8, 10)  # (width, height) px per cell
PLANE_TOP = 10  # first screen row drawn
PLANE_SHAPE = (19, 20)  # (rows, columns): y in [10, 200), x in [0, 160)
PLANE_CLASSES = ("player", "aliens", "player_bullet", "enemy_bullets", "shields", "mystery_ship")
# Egocentric planes: the grid twice as wide less a column, centred on the player (the centre of its middle column).
EGO_SHAPE = (PLANE_SHAPE[0], 2 * PLANE_SHAPE[1] - 1)  # (19, 39): every object stays on it wherever the player is
EGO_CENTRE = (EGO_SHAPE[1] // 2 + 0.5) * PLANE_CELL[0]  # 156 px: where the player's centre is drawn
EGO_CLASSES = PLANE_CLASSES + ("field",)  # "field": the share of each cell inside the screen's 160 px


def _cell(x, y, w, h):
    """The grid cell (row, column) [..., 2] int32 of an object's centre."""
    row = jnp.floor((y + h / 2 - PLANE_TOP) / PLANE_CELL[1])
    col = jnp.floor((x + w / 2) / PLANE_CELL[0])
    return jnp.clip(row, 0, PLANE_SHAPE[0] - 1).astype(jnp.int32), jnp.clip(col, 0, PLANE_SHAPE[1] - 1).astype(
        jnp.int32)


def _bilinear_cells(x, y, w, h, num_cols: int = PLANE_SHAPE[1]):
    """An object's centre spread over the 4 cells whose centres surround it (bilinear weights).

    Returns (row, column, weight), each [..., 4] (int32, int32, float32): the weights sum to 1 and their
    weighted mean of the cell centres is the object's centre, so a position within a cell is kept (clipped to
    the centres of the border cells).
    """
    u = jnp.clip((x + w / 2) / PLANE_CELL[0] - 0.5, 0.0, num_cols - 1.0)  # in cell-centre units
    v = jnp.clip((y + h / 2 - PLANE_TOP) / PLANE_CELL[1] - 0.5, 0.0, PLANE_SHAPE[0] - 1.0)
    col0 = jnp.minimum(jnp.floor(u), num_cols - 2)
    row0 = jnp.minimum(jnp.floor(v), PLANE_SHAPE[0] - 2)
    fu, fv = u - col0, v - row0
    row = jnp.stack([row0, row0, row0 + 1, row0 + 1], axis=-1).astype(jnp.int32)
    col = jnp.stack([col0, col0 + 1, col0, col0 + 1], axis=-1).astype(jnp.int32)
    weight = jnp.stack([(1 - fv) * (1 - fu), (1 - fv) * fu, fv * (1 - fu), fv * fu], axis=-1)
    return row, col, weight


def object_planes(objects: SpaceInvadersObjects, *, bilinear: bool = False,
                  centre_x: jax.Array | None = None) -> jax.Array:
    """Draw one decoded snapshot on the coarse grid: [..., H, W, len(PLANE_CLASSES)] float32.

    Each object adds its weight (1; for shields, the share of a cell's pixels still standing) in its class's
    channel: one scatter-add for all objects of all classes.

    Args:
      objects: one snapshot's objects, leading dims ``...``.
      bilinear: False: to the cell of its centre, each cell clipped to [0, 1] (an 8 x 10 px cell hides where in
        it the object is); True: spread over the 4 cells around its centre with bilinear weights
        (``_bilinear_cells``), unclipped, so positions are kept to the pixel at the same grid size.
      centre_x: None for the screen's grid; [...] px for an egocentric one (needs ``bilinear``): every x shifted
        so that ``centre_x`` is drawn at ``EGO_CENTRE``, on ``EGO_SHAPE`` (19 x 39) cells, plus a ``field``
        channel, the share of each cell's width inside the screen: [..., 19, 39, len(EGO_CLASSES)].
    """
    lead = objects.player_x.shape
    f32 = jnp.float32
    if centre_x is not None and not bilinear:
        raise ValueError("egocentric planes (centre_x) are drawn with bilinear weights: pass bilinear=True")
    shift = 0.0 if centre_x is None else (EGO_CENTRE - jnp.asarray(centre_x, f32))[..., None]  # [..., 1]
    shape = PLANE_SHAPE if centre_x is None else EGO_SHAPE

    def points(x, y, size, weight, channel):  # -> (flat cell index, weight), both [..., M] (bilinear: [..., 4 M])
        x = x + shift
        weight = jnp.broadcast_to(weight, x.shape).astype(f32)
        if bilinear:
            row, col, share = _bilinear_cells(x, y, *size, num_cols=shape[1])
            weight = (weight[..., None] * share).reshape(lead + (-1,))
            row, col = row.reshape(lead + (-1,)), col.reshape(lead + (-1,))
        else:
            row, col = _cell(x, y, *size)
        return (row * shape[1] + col) * len(PLANE_CLASSES) + channel, weight

    def full(value, m):
        return jnp.full(lead + (m,), value, f32)

    alien_x = jnp.broadcast_to(objects.alien_x[..., None, :], lead + (6, 6)).reshape(lead + (36,))
    alien_y = jnp.broadcast_to(objects.alien_y[..., :, None], lead + (6, 6)).reshape(lead + (36,))
    shield_x = jnp.broadcast_to(jnp.asarray(SHIELD_X, f32)[:, None], lead + (3, SHIELD_ROWS)).reshape(lead + (27,))
    shield_y = jnp.broadcast_to(SHIELD_Y + 2.0 * jnp.arange(SHIELD_ROWS, dtype=f32), lead + (3, SHIELD_ROWS))
    # each 2-px shield row of 8 pixels adds its share of the cell's pixels still standing
    shield_weight = jnp.sum(objects.shield_pixels, axis=-1).astype(f32) / (8.0 * PLANE_CELL[1] / 2)
    drawn = [
        points(objects.player_x[..., None], full(PLAYER_Y, 1), PLAYER_SIZE, 1.0, 0),
        points(alien_x, alien_y, ALIEN_SIZE, objects.alien_alive.reshape(lead + (36,)), 1),
        points(objects.player_bullet[..., None, 0], objects.player_bullet[..., None, 1], BULLET_SIZE,
               objects.player_bullet_visible[..., None], 2),
        points(objects.enemy_bullets[..., 0], objects.enemy_bullets[..., 1], BULLET_SIZE,
               objects.enemy_bullets_visible, 3),
        points(shield_x, shield_y.reshape(lead + (27,)), (SHIELD_SIZE[0], 2), shield_weight.reshape(lead + (27,)),
               4),
        points(objects.mystery_ship_x[..., None], full(MYSTERY_SHIP_Y, 1), MYSTERY_SHIP_SIZE,
               objects.mystery_ship_visible[..., None], 5),
    ]
    index = jnp.concatenate([i for i, _ in drawn], axis=-1)  # [..., M]
    weight = jnp.concatenate([w for _, w in drawn], axis=-1)
    num_cells = shape[0] * shape[1] * len(PLANE_CLASSES)
    rows = math.prod(lead)
    flat = index.reshape(rows, -1) + num_cells * jnp.arange(rows, dtype=jnp.int32)[:, None]
    planes = jnp.zeros(rows * num_cells, f32).at[flat.reshape(-1)].add(weight.reshape(-1))
    planes = planes.reshape(lead + shape + (len(PLANE_CLASSES),))
    if centre_x is None:
        return planes if bilinear else jnp.clip(planes, 0.0, 1.0)
    field = _coverage(shift[..., 0], SCREEN_WIDTH, PLANE_CELL[0], shape[1])  # [..., 39]
    return jnp.concatenate([planes, jnp.broadcast_to(field[..., None, :, None], lead + shape + (1,))], axis=-1)


def encode_planes(obs: jax.Array, *, bilinear: bool = False, egocentric: bool = False) -> jax.Array:
    """``--obs-encoding planes`` (``bilinear-planes``, ``ego-planes``): [..., K * 128] uint8 (K >= 2) -> [..., H, W,
    C (K - 1)] float32.

    Each of the last K - 1 snapshots, decoded against the one before it, drawn by `object_planes` (oldest first):
    19 x 20 cells, C = 6; egocentric (bilinear): 19 x 39 cells centred on the newest snapshot's player (older
    snapshots in the same frame, so their motion shows), C = 7 (``EGO_CLASSES``).
    """
    objects = decode_stack(obs)
    centre_x = None
    if egocentric:
        centre_x = jnp.broadcast_to(objects.player_x[..., -1:] + PLAYER_SIZE[0] / 2, objects.player_x.shape)
    planes = object_planes(objects, bilinear=bilinear or egocentric, centre_x=centre_x)  # [..., K - 1, H, W, C]
    planes = jnp.moveaxis(planes, -4, -2)  # [..., H, W, K - 1, C]
    return planes.reshape(planes.shape[:-2] + (-1,))


# Boxes: each object's bounding box drawn as the share of each cell it covers, on a grid of 4 x 5 px cells.
BOX_CELL = (4, 5)  # (width, height) px per cell
BOX_SHAPE = (38, 40)  # (rows, columns): y in [PLANE_TOP, 200), x in [0, 160)


def _coverage(start, size, cell: float, num: int, offset: float = 0.0) -> jax.Array:
    """The share of each of ``num`` cells (``cell`` px wide, the first at ``offset``) that the interval
    ``[start, start + size)`` covers: [..., num] float32 in [0, 1] (``start`` [...])."""
    low = offset + cell * jnp.arange(num, dtype=jnp.float32)
    start = jnp.asarray(start, jnp.float32)[..., None]
    return jnp.clip(jnp.minimum(start + size, low + cell) - jnp.maximum(start, low), 0.0, None) / cell


def object_boxes(objects: SpaceInvadersObjects) -> jax.Array:
    """Draw one decoded snapshot's bounding boxes: [..., 38, 40, len(PLANE_CLASSES)] float32 in [0, 1].

    Each cell of 4 x 5 px holds the share of its area that the class's boxes cover (a shield as its pixels still
    standing, each 1 x 2 px), which is the object masks of the pixel screen averaged over the cells (OpenCV's
    ``INTER_AREA`` resize). A box is separable, so every class is a sum of outer products of per-row and
    per-column coverages: no per-pixel work.
    """
    f32 = jnp.float32

    def cover_x(x, w):
        return _coverage(x, w, BOX_CELL[0], BOX_SHAPE[1])

    def cover_y(y, h):
        return _coverage(y, h, BOX_CELL[1], BOX_SHAPE[0], offset=PLANE_TOP)

    def one_box(y_cover, x_cover, weight):  # [..., R], [..., C], [...] -> [..., R, C]
        return jnp.asarray(weight, f32)[..., None, None] * y_cover[..., :, None] * x_cover[..., None, :]

    player = one_box(cover_y(float(PLAYER_Y), PLAYER_SIZE[1]), cover_x(objects.player_x, PLAYER_SIZE[0]), 1.0)
    aliens = jnp.einsum("...ij,...iR,...jC->...RC", objects.alien_alive.astype(f32),
                        cover_y(objects.alien_y, ALIEN_SIZE[1]), cover_x(objects.alien_x, ALIEN_SIZE[0]))
    player_bullet = one_box(cover_y(objects.player_bullet[..., 1], BULLET_SIZE[1]),
                            cover_x(objects.player_bullet[..., 0], BULLET_SIZE[0]), objects.player_bullet_visible)
    enemy_bullets = jnp.einsum("...m,...mR,...mC->...RC", objects.enemy_bullets_visible.astype(f32),
                               cover_y(objects.enemy_bullets[..., 1], BULLET_SIZE[1]),
                               cover_x(objects.enemy_bullets[..., 0], BULLET_SIZE[0]))
    # shield s, row r (2 px tall), pixel p (1 px wide) at x = SHIELD_X[s] + p, y = SHIELD_Y + 2 r
    shield_rows = cover_y(SHIELD_Y + 2.0 * jnp.arange(SHIELD_ROWS, dtype=f32), 2)  # [9, R]
    shield_columns = cover_x(jnp.asarray(SHIELD_X, f32)[:, None] + jnp.arange(8, dtype=f32), 1)  # [3, 8, C]
    shields = jnp.einsum("...srp,rR,spC->...RC", objects.shield_pixels.astype(f32), shield_rows, shield_columns)
    ship = one_box(cover_y(float(MYSTERY_SHIP_Y), MYSTERY_SHIP_SIZE[1]),
                   cover_x(objects.mystery_ship_x, MYSTERY_SHIP_SIZE[0]), objects.mystery_ship_visible)
    lead = objects.player_x.shape
    planes = [jnp.broadcast_to(p, lead + BOX_SHAPE) for p in
              (player, aliens, player_bullet, enemy_bullets, shields, ship)]  # PLANE_CLASSES' order
    return jnp.clip(jnp.stack(planes, axis=-1), 0.0, 1.0)  # two boxes of a class may overlap


def encode_box_planes(obs: jax.Array) -> jax.Array:
    """``--obs-encoding box-planes``: [..., K * 128] uint8 (K >= 2) -> [..., 38, 40, 6 (K - 1)] float32.

    Each of the last K - 1 snapshots, decoded against the one before it, drawn by `object_boxes` (oldest first).
    """
    planes = object_boxes(decode_stack(obs))  # [..., K - 1, R, C, 6]
    planes = jnp.moveaxis(planes, -4, -2)  # [..., R, C, K - 1, 6]
    return planes.reshape(planes.shape[:-2] + (-1,))
