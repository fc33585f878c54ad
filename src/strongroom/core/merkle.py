"""RFC 6962 / RFC 9162 Merkle trees: hashing, roots, proofs and their verification (pure stdlib).

    leaf_hash(entry)  = SHA-256(0x00 ‖ entry)
    node_hash(l, r)   = SHA-256(0x01 ‖ l ‖ r)
    MTH({})           = SHA-256("")
    MTH(D[n])         = node_hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

Three ways to hold a tree, by what the caller needs:

- ``root(leaf_hashes)``, ``inclusion_proof``, ``consistency_proof``: one-shot functions over a list of
  leaf hashes, O(n) time, no recursion (sizes up to 2**63 never touch the stack).
- ``MerkleTree``: keeps every level packed in a bytearray (32 bytes a node, ~64 MB for 10**6 leaves), so
  after an O(n) build each root, past root, inclusion or consistency proof costs O(log n).
- ``CompactRange``: only the right border (one subtree root per set bit of the size), so appending
  costs O(log n) and the root is available without keeping any leaf in memory.

Verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2, and also reject up front a proof whose length is not
the one the sizes imply (as sigstore-python and transparency-dev/merkle do); the consistency check ends
only when the second size has been fully consumed (the Haskell hash-tree 0.1.1 bug). Any failure raises
``IntegrityError`` (the proof, its sizes or its hashes do not verify); ``InputError`` is for requests that
cannot be meaningful at all (negative sizes, proofs asked for leaves that do not exist).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from strongroom.errors import InputError, IntegrityError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 §2.1 leaf hash: SHA-256(0x00 ‖ entry)."""
    return _sha256(LEAF_PREFIX + bytes(entry)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 6962's split: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {value!r}")


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != HASH_SIZE:
        raise IntegrityError(f"{name} is not a {HASH_SIZE}-byte hash")


def _reduce_level(level: Sequence[bytes]) -> list[bytes]:
    """One level up: hash adjacent pairs; an unpaired last node is promoted unchanged (equals RFC 6962)."""
    it = iter(level)
    up = [_sha256(NODE_PREFIX + a + b).digest() for a, b in zip(it, it, strict=False)]
    if len(level) % 2:
        up.append(level[-1])
    return up


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the given leaf hashes, computed level by level (O(n) hashes, O(n/2) extra memory)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    if any(len(h) != HASH_SIZE for h in leaf_hashes):
        raise InputError(f"a leaf hash must be {HASH_SIZE} bytes")
    level: Sequence[bytes] = leaf_hashes
    while len(level) > 1:
        level = _reduce_level(level)
    return bytes(level[0])


def _path_ranges(leaf_index: int, size: int) -> list[tuple[int, int]]:
    """The [start, end) leaf ranges whose MTHs form PATH(m, D[n]) (RFC 9162 §2.1.3.1), in proof order."""
    out: list[tuple[int, int]] = []
    start, end, m = 0, size, leaf_index
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
            m -= k
    out.reverse()
    return out


def _subproof_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (RFC 9162 §2.1.4.1)."""
    if old_size in (0, size):
        return []
    out: list[tuple[int, int]] = []
    start, end, m, complete = 0, size, old_size, True
    while True:
        if m == end - start:
            if not complete:
                out.append((start, end))
            break
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
            m -= k
            complete = False
    out.reverse()
    return out


def inclusion_proof(leaf_index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Audit path for leaf ``leaf_index`` in the tree of ``leaf_hashes``: O(n) hashes, O(log n) results.

    For many proofs over one tree, build a ``MerkleTree`` once instead.
    """
    _check_size("leaf index", leaf_index)
    if leaf_index >= len(leaf_hashes):
        raise InputError(f"leaf index {leaf_index} out of range for tree size {len(leaf_hashes)}")
    return [root(leaf_hashes[a:b]) for a, b in _path_ranges(leaf_index, len(leaf_hashes))]


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from the first ``old_size`` leaves to all of ``leaf_hashes`` (O(n) hashes)."""
    _check_size("old size", old_size)
    if old_size > len(leaf_hashes):
        raise InputError(f"old size {old_size} is larger than the tree size {len(leaf_hashes)}")
    return [root(leaf_hashes[a:b]) for a, b in _subproof_ranges(old_size, len(leaf_hashes))]


class MerkleTree:
    """An append-only tree that keeps every level, packed, for O(log n) proofs after an O(n) build.

    ``levels[k]`` holds the nodes at height k; node j there is MTH(D[j·2^k : min((j+1)·2^k, n)]), an
    unpaired last node being promoted from the level below, which is exactly RFC 6962's tree shape.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        leaves = list(leaf_hashes)
        for h in leaves:
            _check_leaf(h)
        self._size = len(leaves)
        self._levels: list[bytearray] = []
        level: list[bytes] = leaves
        while level:
            self._levels.append(bytearray(b"".join(level)))
            if len(level) == 1:
                break
            level = _reduce_level(level)

    @property
    def size(self) -> int:
        return self._size

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise InputError(f"leaf index {index} out of range for tree size {self._size}")
        return self._node(0, index)

    def _node(self, height: int, index: int) -> bytes:
        offset = index * HASH_SIZE
        return bytes(self._levels[height][offset : offset + HASH_SIZE])

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that is a node of the tree of size ``self._size``."""
        height = (end - start - 1).bit_length()
        return self._node(height, start >> height)

    def append(self, leaf_hash_: bytes) -> None:
        """Add one leaf hash, updating the right edge of every level: O(log n)."""
        _check_leaf(leaf_hash_)
        index = self._size
        self._size += 1
        if not self._levels:
            self._levels.append(bytearray())
        self._levels[0] += leaf_hash_
        height = 1
        while (1 << (height - 1)) < self._size:
            below = self._levels[height - 1]
            j = index >> height
            left = bytes(below[2 * j * HASH_SIZE : (2 * j + 1) * HASH_SIZE])
            right = bytes(below[(2 * j + 1) * HASH_SIZE : (2 * j + 2) * HASH_SIZE])
            value = node_hash(left, right) if right else left
            if height == len(self._levels):
                self._levels.append(bytearray())
            level = self._levels[height]
            level[j * HASH_SIZE : (j + 1) * HASH_SIZE] = value
            height += 1

    def root(self) -> bytes:
        return self.root_at(self._size)

    def root_at(self, size: int) -> bytes:
        """The root the tree had when it held ``size`` leaves (O(log n))."""
        _check_size("tree size", size)
        if size > self._size:
            raise InputError(f"tree size {size} is beyond the current size {self._size}")
        if size == 0:
            return EMPTY_ROOT
        if size == self._size:
            return self._node(len(self._levels) - 1, 0)
        # The perfect subtrees of the old tree are nodes of this one: fold them from the right.
        return _fold_right([self._range_hash(a, b) for a, b in _perfect_cover(0, size)])

    def inclusion_proof(self, leaf_index: int, size: int | None = None) -> list[bytes]:
        """Audit path for ``leaf_index`` in the tree of the first ``size`` leaves (default: all)."""
        size = self._size if size is None else size
        _check_size("leaf index", leaf_index)
        _check_size("tree size", size)
        if size > self._size:
            raise InputError(f"tree size {size} is beyond the current size {self._size}")
        if leaf_index >= size:
            raise InputError(f"leaf index {leaf_index} out of range for tree size {size}")
        return [self._subtree(start, end, size) for start, end in _path_ranges(leaf_index, size)]

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """Proof that the tree of ``old_size`` leaves is a prefix of the tree of ``size`` (default: all)."""
        size = self._size if size is None else size
        _check_size("old size", old_size)
        _check_size("tree size", size)
        if size > self._size:
            raise InputError(f"tree size {size} is beyond the current size {self._size}")
        if old_size > size:
            raise InputError(f"old size {old_size} is larger than the new size {size}")
        return [self._subtree(start, end, size) for start, end in _subproof_ranges(old_size, size)]

    def _subtree(self, start: int, end: int, size: int) -> bytes:
        if end == size and size != self._size and (end - start) & (end - start - 1):
            # A right-edge range of an older tree that is not a perfect subtree: rebuild it from the
            # perfect subtrees it is made of (at most log n of them).
            return _fold_right([self._range_hash(a, b) for a, b in _perfect_cover(start, end)])
        return self._range_hash(start, end)


def _check_leaf(h: bytes) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        raise InputError(f"a leaf hash must be {HASH_SIZE} bytes")


def _perfect_cover(start: int, end: int) -> list[tuple[int, int]]:
    """Split [start, end), start aligned to the next power of two >= end-start, into perfect subtrees."""
    out: list[tuple[int, int]] = []
    length = end - start
    for height in range(length.bit_length() - 1, -1, -1):
        if length >> height & 1:
            out.append((start, start + (1 << height)))
            start += 1 << height
    return out


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


class CompactRange:
    """The right border of a tree: one subtree root per set bit of the size, largest (leftmost) first.

    Appending is O(log n) amortised O(1) hashes and keeps O(log n) memory, so a log of any length can be
    extended and its root computed without its leaves. ``hashes`` and ``size`` are the state to persist;
    ``CompactRange.from_state`` restores it.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        _check_size("tree size", size)
        if len(hashes) != size.bit_count():
            raise InputError(f"a compact range of size {size} has {size.bit_count()} hashes, not {len(hashes)}")
        for h in hashes:
            _check_leaf(h)
        cr = cls()
        cr._size = size
        cr._hashes = [bytes(h) for h in hashes]
        return cr

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash_: bytes) -> None:
        _check_leaf(leaf_hash_)
        h = bytes(leaf_hash_)
        n = self._size
        stack = self._hashes
        while n & 1:
            h = _sha256(NODE_PREFIX + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        return _fold_right(self._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"


def _inclusion_shape(leaf_index: int, size: int) -> tuple[int, int]:
    """(inner, border): how many proof hashes sit below and on the right border (RFC 9162 §2.1.3.2)."""
    inner = (leaf_index ^ (size - 1)).bit_length()
    border = (leaf_index >> inner).bit_count()
    return inner, border


def root_from_inclusion_proof(leaf_index: int, tree_size: int, leaf_hash_: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an audit path (RFC 9162 §2.1.3.2); raises IntegrityError if it cannot be one."""
    _check_size("leaf index", leaf_index)
    _check_size("tree size", tree_size)
    if leaf_index >= tree_size:
        raise IntegrityError(f"leaf index {leaf_index} is out of range for tree size {tree_size}")
    _check_hash("leaf hash", leaf_hash_)
    inner, border = _inclusion_shape(leaf_index, tree_size)
    if len(proof) != inner + border:
        raise IntegrityError(
            f"inclusion proof has {len(proof)} hashes; ({leaf_index}, {tree_size}) needs {inner + border}"
        )
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    fn, sn, r = leaf_index, tree_size - 1, bytes(leaf_hash_)
    for p in proof:
        if sn == 0:
            raise IntegrityError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(bytes(p), r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, bytes(p))
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(leaf_index: int, tree_size: int, leaf_hash_: bytes, proof: Sequence[bytes], root_: bytes) -> None:
    """Check that ``leaf_hash_`` is leaf ``leaf_index`` of the tree of ``tree_size`` with root ``root_``."""
    _check_hash("root", root_)
    computed = root_from_inclusion_proof(leaf_index, tree_size, leaf_hash_, proof)
    if not hmac.compare_digest(computed, bytes(root_)):
        raise IntegrityError(
            f"inclusion proof for leaf {leaf_index} does not lead to the root of tree size {tree_size}"
        )


def _consistency_length(old_size: int, new_size: int) -> int:
    inner, border = _inclusion_shape(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1  # trailing zeros of old_size
    inner -= shift
    return inner + border + (0 if old_size == 1 << shift else 1)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (old_size, old_root) is a prefix of (new_size, new_root) (RFC 9162 §2.1.4.2).

    Stricter than RFC 9162 where it is silent: for old_size 0 the old root must be SHA-256("") (and the
    new root too when new_size is 0), and the proof must be empty.
    """
    _check_size("old size", old_size)
    _check_size("new size", new_size)
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if old_size > new_size:
        raise IntegrityError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise IntegrityError(f"consistency proof from {old_size} to {new_size} must be empty")
        if old_size == 0 and not hmac.compare_digest(bytes(old_root), EMPTY_ROOT):
            raise IntegrityError("the root of the empty tree must be SHA-256 of the empty string")
        if not hmac.compare_digest(bytes(old_root), bytes(new_root)) and old_size == new_size:
            raise IntegrityError(f"two different roots for the same tree size {old_size}")
        return
    if len(proof) != _consistency_length(old_size, new_size):
        raise IntegrityError(
            f"consistency proof has {len(proof)} hashes; ({old_size}, {new_size}) needs "
            f"{_consistency_length(old_size, new_size)}"
        )
    path = [bytes(p) for p in proof]
    if old_size & (old_size - 1) == 0:  # exact power of two: the old root is the first node
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError("consistency proof is longer than the new tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError(f"consistency proof does not consume the new size {new_size}")
    if not hmac.compare_digest(fr, bytes(old_root)):
        raise IntegrityError(f"consistency proof does not lead to the old root (size {old_size})")
    if not hmac.compare_digest(sr, bytes(new_root)):
        raise IntegrityError(f"consistency proof does not lead to the new root (size {new_size})")
