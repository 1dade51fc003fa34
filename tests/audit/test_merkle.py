"""RFC 9162 hashing and proofs: known answers and properties for every size."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phiguard.audit.merkle import (
    EMPTY_ROOT,
    MemoryNodes,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    root,
    split,
    verify_consistency,
    verify_inclusion,
)

# The leaves and roots of the Certificate Transparency reference test vectors.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC's recursive definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def tree(n: int) -> tuple[MemoryNodes, list[bytes]]:
    data = [i.to_bytes(4, "big") for i in range(n)]
    return MemoryNodes([leaf_hash(d) for d in data]), data


def test_known_answer_roots() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for size, expected in enumerate(ROOTS, 1):
        nodes = MemoryNodes([leaf_hash(x) for x in LEAVES[:size]])
        assert root(nodes, size).hex() == expected


def test_incremental_append_matches_bulk() -> None:
    nodes = MemoryNodes()
    for size, leaf in enumerate(LEAVES, 1):
        nodes.append(leaf_hash(leaf))
        assert root(nodes, size).hex() == ROOTS[size - 1]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_inclusion_proofs_verify_for_every_size_and_index(n: int, data: st.DataObject) -> None:
    nodes, leaves = tree(n)
    m = data.draw(st.integers(0, n - 1))
    assert root(nodes, n) == naive_root(leaves)
    path = inclusion_path(nodes, m, n)
    good = root(nodes, n)
    assert verify_inclusion(leaf_hash(leaves[m]), m, n, path, good)
    # Any change breaks it: another leaf, index, path hash or root.  (The size is not
    # checked on its own: a proof is verified against a signed (size, root) pair.)
    assert not verify_inclusion(leaf_hash(b"forged"), m, n, path, good)
    if n > 1:
        assert not verify_inclusion(leaf_hash(leaves[m]), (m + 1) % n, n, path, good)
        bent = [*path]
        i = data.draw(st.integers(0, len(bent) - 1))
        bent[i] = hashlib.sha256(bent[i]).digest()
        assert not verify_inclusion(leaf_hash(leaves[m]), m, n, bent, good)
    assert not verify_inclusion(leaf_hash(leaves[m]), m, n, path, leaf_hash(b"other root"))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_consistency_proofs_verify_for_every_pair(n: int, data: st.DataObject) -> None:
    nodes, _ = tree(n)
    m = data.draw(st.integers(1, n))
    path = consistency_path(nodes, m, n)
    r1, r2 = root(nodes, m), root(nodes, n)
    assert verify_consistency(m, n, r1, r2, path)
    assert not verify_consistency(m, n, leaf_hash(b"x"), r2, path)
    assert not verify_consistency(m, n, r1, leaf_hash(b"y"), path)
    if m < n:
        bent = [*path]
        i = data.draw(st.integers(0, len(bent) - 1))
        bent[i] = hashlib.sha256(bent[i]).digest()
        assert not verify_consistency(m, n, r1, r2, bent)
        # A history that rewrote an old leaf is not consistent with the old root.
        other, _ = tree(n)
        other.levels = [[*other.levels[0]]]
        other.levels[0][m - 1] = leaf_hash(b"rewritten")
        rewritten = MemoryNodes(other.levels[0])
        assert not verify_consistency(
            m, n, r1, root(rewritten, n), consistency_path(rewritten, m, n)
        )


def test_proof_sizes_are_logarithmic() -> None:
    nodes, _ = tree(1000)
    assert len(inclusion_path(nodes, 500, 1000)) <= 10
    assert len(consistency_path(nodes, 300, 1000)) <= 2 * 10


@pytest.mark.parametrize(("m", "n"), [(0, 1), (2, 1), (-1, 5)])
def test_bad_proof_requests(m: int, n: int) -> None:
    nodes, _ = tree(3)
    with pytest.raises(ValueError):
        consistency_path(nodes, m, n) if m != -1 else inclusion_path(nodes, m, n)
