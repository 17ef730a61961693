"""RFC 6962 (RFC 9162 section 2.1) Merkle trees: the root of a batch of entitlement statements and
each statement's inclusion path.

    leaf = sha256(0x00 || statement bytes)        node = sha256(0x01 || left || right)

A tree of n leaves splits at k, the largest power of two below n (RFC 6962 MTH), so every tree size
has one shape and the signed batch's ``count`` fixes it. Paths list the siblings from the leaf up.
Pure functions: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root over ``leaves`` (leaf hashes) and each leaf's inclusion path, leaf to root."""
    return _tree(leaves, _same)


def tree_hex(leaves: Sequence[bytes]) -> tuple[bytes, list[list[str]]]:
    """``tree``, with each path node spelled in hex once (a node is on many paths)."""
    return _tree(leaves, bytes.hex)


T = TypeVar("T")


def _same(node: bytes) -> bytes:
    return node


def _tree(leaves: Sequence[bytes], spell: Callable[[bytes], T]) -> tuple[bytes, list[list[T]]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    paths: list[list[T]] = [[] for _ in leaves]
    return _build(leaves, 0, len(leaves), paths, spell), paths


def _build(leaves: Sequence[bytes], lo: int, hi: int, paths: list[list[T]], spell: Callable[[bytes], T]) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    k = 1 << ((hi - lo - 1).bit_length() - 1)  # the largest power of two below hi - lo
    left = _build(leaves, lo, lo + k, paths, spell)
    right = _build(leaves, lo + k, hi, paths, spell)
    spelled = spell(right)
    for i in range(lo, lo + k):  # siblings are appended after the subtree's own: leaf-to-root order
        paths[i].append(spelled)
    spelled = spell(left)
    for i in range(lo + k, hi):
        paths[i].append(spelled)
    return node_hash(left, right)


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` leads to from ``leaf`` at ``index`` of a tree of ``size`` leaves, or
    None when the path cannot belong to such a tree (RFC 9162 2.1.3.2: too long, too short, an index
    outside the tree, a node that is not a hash)."""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in path):
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
