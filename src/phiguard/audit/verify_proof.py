"""Stand-alone verifier for phiguard audit proofs: no server, no database, no keys.

Usage::

    python -m phiguard.audit.verify_proof proof.json [--public-key KEY_B64]

``proof.json`` is what ``phiguard audit proof SEQ`` prints.  The verifier checks
that the entry's leaf hashes to the proven leaf, that the RFC 9162 inclusion path
leads from it to the checkpoint's root, and that the checkpoint's Ed25519
signature is valid for the public key you trust (pass it with ``--public-key``;
without it, the key inside the proof is used and the output says so).

This file imports nothing from phiguard on purpose: copy it anywhere that has
Python 3.11 and the ``cryptography`` package, and it runs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def checkpoint_message(size: int, root: bytes, signed_at_us: int) -> bytes:
    return b"phiguard-checkpoint/v1\n" + struct.pack(">QQ", size, signed_at_us) + root


def check(proof: dict[str, Any], trusted_key: bytes | None) -> list[str]:
    """Problems found (empty = the proof holds)."""
    problems = []
    b64 = base64.b64decode
    leaf = b64(proof["leaf"])
    seq = int(proof["seq"])
    cp = proof["checkpoint"]
    size, root = int(cp["size"]), b64(cp["root"])
    if len(leaf) < 12 or struct.unpack_from(">Q", leaf, 4)[0] != seq:
        problems.append("the leaf does not claim the proven position")
    path = [b64(h) for h in proof["path"]]
    if not verify_inclusion(_leaf_hash(leaf), seq, size, path, root):
        problems.append("the inclusion path does not lead to the checkpoint root")
    key = trusted_key or b64(cp["public_key"])
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(key).verify(
            b64(cp["signature"]), checkpoint_message(size, root, int(cp["signed_at_us"]))
        )
    except Exception:  # any failure of the signature check is a failed proof
        problems.append("the checkpoint signature is not valid for the public key")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proof", type=Path)
    parser.add_argument("--public-key", help="the ledger's Ed25519 public key (base64)")
    args = parser.parse_args(argv)
    try:
        proof = json.loads(args.proof.read_text())
        trusted = base64.b64decode(args.public_key) if args.public_key else None
        problems = check(proof, trusted)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"verify_proof: cannot read the proof: {type(exc).__name__}", file=sys.stderr)
        return 2
    if problems:
        for p in problems:
            print(f"FAILED: {p}")
        return 1
    whose = "the given public key" if trusted else "the key inside the proof (pass --public-key)"
    print(
        f"OK: entry {proof['seq']} is in the ledger at size {proof['checkpoint']['size']}, "
        f"signed by {whose}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
