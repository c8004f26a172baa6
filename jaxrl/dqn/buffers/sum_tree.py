"""A sum tree over non-negative leaf values as pure functions on two flat arrays (prioritized replay's index).

Schaul et al. (2016, "Prioritized Experience Replay", appendix B.2.1) draw from ``P(i) = p_i / sum_k p_k`` with a
binary tree whose every node holds the sum of its children: drawing a row for a mass ``m`` in ``[0, total)``
walks from the root to a leaf, and changing a leaf rewrites its ancestors, both in O(log capacity).

Layout (an implicit binary heap; ``P`` = `num_leaves(capacity)`, the smallest power of two >= max(capacity, 2)):

- ``leaves``: ``[capacity]`` the values themselves (the buffer's priorities); leaves ``capacity .. P - 1`` are
  padding that always reads 0 and is never stored;
- ``tree``: ``[P]`` the inner nodes. Node 1 is the root (``tree[1]`` is the total); node ``k`` has the children
  ``2k`` and ``2k + 1``; a child ``j >= P`` is leaf ``j - P``. ``tree[0]`` is unused (0).

Every inner node is recomputed as ``left + right`` from its children (never by adding a difference), so a tree
kept up to date by `set_leaves` equals `build` of its leaves bit for bit and does not drift. All shapes are
static and the walks are unrolled over the ``log2(P)`` levels, vectorised over the rows: everything jits, vmaps
and donates.

    tree = build(leaves)                                    # leaves [capacity] float32
    tree, leaves = set_leaves(tree, leaves, rows, values)   # rows [K] int32 (>= capacity: ignored), values [K]
    rows = find(tree, leaves, masses)                       # masses [K] in [0, total(tree)) -> rows [K] int32
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def num_leaves(capacity: int) -> int:
    """P: the smallest power of two >= max(capacity, 2), the number of leaves of the full tree (static)."""
    return 1 << max(1, (int(capacity) - 1).bit_length())


def build(leaves: jax.Array) -> jax.Array:
    """The inner nodes ``[P]`` of the sum tree over ``leaves`` ``[capacity]``, level by level: O(capacity)."""
    capacity = leaves.shape[0]
    level = jnp.zeros((num_leaves(capacity),), leaves.dtype).at[:capacity].set(leaves)
    levels = []
    while level.shape[0] > 1:
        level = level[0::2] + level[1::2]  # each parent = left + right
        levels.append(level)
    return jnp.concatenate([jnp.zeros((1,), leaves.dtype)] + levels[::-1])  # [unused, root, 2 nodes, 4 nodes ...]


def total(tree: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """The sum of all leaves (the root), repeated to ``shape``.

    Read it at the shape it is used at (a batch of masses): a gather, where a scalar read of the tree inside a
    loop body that then rewrites the tree (`set_leaves`) makes XLA copy the whole tree each iteration.
    """
    return tree[jnp.ones(shape, jnp.int32)]


def _leaf(leaves: jax.Array, index: jax.Array) -> jax.Array:
    """leaves[index], 0 for the padding leaves (index >= capacity)."""
    return leaves.at[index].get(mode="fill", fill_value=0)


def set_leaves(tree: jax.Array, leaves: jax.Array, rows: jax.Array, values: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """Set ``leaves[rows] = values`` and rewrite the ancestors of those leaves: O(K log P).

    Args:
      tree: [P] inner nodes over ``leaves``.
      leaves: [capacity] leaf values.
      rows: [K] int leaves to set; a row >= capacity is skipped (as by ``.at[].set(mode="drop")``). A row given
        twice takes one of its values, and the tree sums the one taken.
      values: [K] new values, >= 0.

    Returns:
      (tree, leaves) after the writes.
    """
    capacity, size = leaves.shape[0], tree.shape[0]
    leaves = leaves.at[rows].set(values.astype(leaves.dtype), mode="drop")
    node = (size + jnp.minimum(rows, capacity - 1)) // 2  # [K] parents of the leaves (a skipped row: harmless)
    first_child = 2 * node - size  # [K] leaf index of each parent's left child
    tree = tree.at[node].set(_leaf(leaves, first_child) + _leaf(leaves, first_child + 1))
    for _ in range(size.bit_length() - 2):  # the levels above, up to the root (node 1)
        node = node // 2
        tree = tree.at[node].set(tree[2 * node] + tree[2 * node + 1])
    return tree, leaves


def find(tree: jax.Array, leaves: jax.Array, masses: jax.Array) -> jax.Array:
    """For each mass ``m`` in ``[0, total)``: the leaf ``i`` with ``sum_{k < i} leaves[k] <= m < sum_{k <= i}``.

    That is ``searchsorted(cumsum(leaves), m, side="right")``, found by walking down from the root in O(log P):
    at each node go right when ``m >= left`` (then ``m -= left``), else left. A zero-mass right subtree is never
    entered, so even at the top edge (``m >= total`` by round-off) the row found has a leaf > 0 whenever the
    total is > 0 (an all-zero tree gives row 0).

    Args:
      tree: [P] inner nodes over ``leaves``.
      leaves: [capacity] leaf values.
      masses: [K] float.

    Returns:
      [K] int32 rows in [0, capacity).
    """
    size = tree.shape[0]
    depth = size.bit_length() - 1  # log2(P) >= 1
    node = jnp.ones(masses.shape, jnp.int32)
    for level in range(depth):
        left = 2 * node
        if level < depth - 1:
            left_mass, right_mass = tree[left], tree[left + 1]
        else:  # the children are leaves
            left_mass, right_mass = _leaf(leaves, left - size), _leaf(leaves, left + 1 - size)
        go_right = (masses >= left_mass) & (right_mass > 0)
        masses = jnp.where(go_right, masses - left_mass, masses)
        node = jnp.where(go_right, left + 1, left)
    return (node - size).astype(jnp.int32)
