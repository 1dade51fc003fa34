"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Hashing follows RFC 9162 section 2.1.1 (SHA-256, 0x00 leaf prefix, 0x01 node prefix,
split at the largest power of two smaller than n).  Proof generation works from
*perfect subtrees* (aligned blocks of 2^level leaves) supplied by a ``Nodes`` source,
so a log of ten million entries needs only O(log^2 n) stored hashes per proof rather
than a pass over the leaves.  Verification needs nothing but hashes and sizes: it is
what the stand-alone verifier (``phiguard.audit.verify_proof``) runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Nodes(Protocol):
    def perfect(self, level: int, index: int) -> bytes:
        """Hash of leaves [index * 2^level, (index + 1) * 2^level)."""
        ...


def subtree(nodes: Nodes, start: int, end: int) -> bytes:
    """MTH of leaves [start, end), where ``start`` is aligned as RFC 9162 splits are."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return nodes.perfect(n.bit_length() - 1, start // n)
    k = split(n)
    return node_hash(subtree(nodes, start, start + k), subtree(nodes, start + k, end))


def root(nodes: Nodes, size: int) -> bytes:
    return subtree(nodes, 0, size)


def inclusion_path(nodes: Nodes, index: int, size: int) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]) for leaf ``index`` in a tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            path.append(subtree(nodes, start + k, end))
            end = start + k
        else:
            path.append(subtree(nodes, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_path(nodes: Nodes, first: int, second: int) -> list[bytes]:
    """RFC 9162 PROOF(m, D[n]) between tree sizes ``first`` <= ``second``."""
    if not 0 < first <= second:
        raise ValueError("consistency needs 0 < first <= second")
    path: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                path.append(subtree(nodes, start, end))
            break
        k = split(n)
        if m <= k:
            path.append(subtree(nodes, start + k, end))
            end = start + k
        else:
            path.append(subtree(nodes, start, start + k))
            start, m, complete = start + k, m - k, False
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if first <= 0 or first > second:
        return False
    if first == second:
        return not path and first_root == second_root
    if not path:
        return False
    proof = list(path)
    if first & (first - 1) == 0:
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


class MemoryNodes:
    """Perfect-subtree hashes over an in-memory list of leaf hashes (tests, verifier)."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        for h in range(1, 64):
            below = self.levels[h - 1]
            if len(below) < 2:
                break
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def append(self, leaf: bytes) -> None:
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            below = self.levels[level]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(below[-2], below[-1]))
            level += 1

    def perfect(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    @property
    def size(self) -> int:
        return len(self.levels[0])
