"""T12, no equality leak: equal data in two repositories, or in two scopes of one repository, must not show
as equal anywhere an attacker holding the storage (or the backup bucket) can look, and no stored byte or name
may be an unkeyed hash of plaintext that would confirm a known file or chunk.

One dataset (random and compressible files, several chunks each, a duplicate, small single-chunk files) is
committed into repositories A and B, and into scopes s1 and s2 (plus unscoped) of repository C; all three
are pushed to one S3 bucket (moto). With the keys, through the library, every plaintext chunk (the
boundaries each repository's chunker really chose), every whole file, tree and commit is read back and
hashed with SHA-256 and unkeyed BLAKE3; the needles are each digest raw, its first 16 bytes, lowercase and
uppercase hex, the first 32 hex digits, and base64; the long file names are needles too. Haystacks: every
byte and every relative path of the three repository folders, every version of every object in the bucket
with its key and metadata. Pass: 0 hits; 0 object ids, pack names or index names shared across A, B and C,
nor between the objects of s1, s2 and unscoped data in C.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

from strongroom import Strongroom
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, FILE
from strongroom.crypto import idhash
from strongroom.service import backup as backup_svc
from strongroom.service import versions as ver_svc
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, make_tree
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401

FIXED_NAMES = {"config", "counters", "keyring", "refs", "signers"}  # the same in every repository by design
WINDOW = 8  # the scanner finds every needle of 2 * WINDOW - 1 = 15 bytes or more


def dataset(root: Path) -> Path:
    rnd = random.Random(1212)
    rows = "".join(f"{i},patient-{i % 977:04d},scan-{i * 7919 % 100003:06d}.dcm,lbl-{i % 13}\n" for i in range(60_000))
    photo = rnd.randbytes(5 << 20)  # more than the 4 MiB largest chunk: always 2 chunks or more
    files = {
        "images/patient-0042-chest-xray-2026.bin": photo,
        "images/duplicate-of-chest-xray-0042.bin": photo,
        "labels/patient-cohort-labels-2026.csv": rows.encode(),
        "notes/radiology-report-patient-0042.txt": b"no acute findings; follow-up in six months\n" * 40,
        "notes/tiny-consent-form-0042.json": b'{"consent": true, "id": 42}',
    }
    files |= {f"shards/training-shard-{i:05d}.bin": rnd.randbytes(rnd.randint(1_000, 40_000)) for i in range(12)}
    return make_tree(root, files)


@dataclass
class Plain:
    """What one repository stores, read back with its keys."""

    chunks: dict[bytes, bytes] = field(default_factory=dict)  # object id → plaintext
    files: dict[str, bytes] = field(default_factory=dict)  # "<version>:<path>" → whole file
    cuts: dict[str, list[int]] = field(default_factory=dict)  # "<version>:<path>" → its chunk lengths
    trees: dict[bytes, bytes] = field(default_factory=dict)
    commits: dict[bytes, bytes] = field(default_factory=dict)
    by_version: dict[bytes, set[bytes]] = field(default_factory=dict)  # commit id → ids of its trees and chunks


def read_back(repo: Repository) -> Plain:
    out = Plain()
    for cid in repo.read_refs().heads():
        stack = [cid]
        while stack:  # every version on every branch
            c = stack.pop()
            if c in out.commits:
                continue
            out.commits[c] = repo.read_object(c, ObjectKind.COMMIT)
            commit = repo.load_commit(c)
            stack.extend(commit.parents)
            mine = out.by_version.setdefault(c, set())
            trees = [(commit.tree, "")]
            while trees:
                tid, prefix = trees.pop()
                mine.add(tid)
                out.trees[tid] = repo.read_object(tid, ObjectKind.TREE)
                for e in repo.load_tree(tid).entries:
                    if e.type == DIR and e.subtree is not None:
                        trees.append((e.subtree, f"{prefix}{e.name}/"))
                    elif e.type == FILE:
                        parts = []
                        for ch in e.chunks:
                            if ch not in out.chunks:
                                out.chunks[ch] = repo.read_object(ch, ObjectKind.CHUNK)
                            parts.append(out.chunks[ch])
                            mine.add(ch)
                        out.files[f"{c.hex()}:{prefix}{e.name}"] = b"".join(parts)
                        out.cuts[f"{c.hex()}:{prefix}{e.name}"] = [len(p) for p in parts]
    return out


def needles(plains: Iterable[Plain], names: Iterable[str]) -> dict[bytes, str]:
    """Every encoding of every plaintext digest (and the file names), each with what it stands for."""
    found: dict[bytes, str] = {}
    for p in plains:
        items = [("chunk", v) for v in p.chunks.values()] + [("file", v) for v in p.files.values()]
        items += [("tree", v) for v in p.trees.values()] + [("commit", v) for v in p.commits.values()]
        for what, data in items:
            for algo, digest in (("sha256", hashlib.sha256(data).digest()), ("blake3", blake3.blake3(data).digest())):
                hexd = digest.hex()
                for form, needle in (
                    ("raw", digest),
                    ("raw[:16]", digest[:16]),
                    ("hex", hexd.encode()),
                    ("HEX", hexd.upper().encode()),
                    ("hex[:32]", hexd[:32].encode()),
                    ("base64", base64.b64encode(digest)),
                ):
                    found[needle] = f"{algo} {form} of a {what}"
    for name in names:
        found[name.encode()] = f"file name {name}"
    assert all(len(n) >= 2 * WINDOW - 1 for n in found)
    return found


class Scanner:
    """Finds every occurrence of many needles (each at least 15 bytes) in large haystacks. Any occurrence
    fully covers one 8-byte window at an offset that is a multiple of 8, so only those windows are looked up
    (as 64-bit integers, a million at a time); a candidate is then checked in full."""

    def __init__(self, found: dict[bytes, str]) -> None:
        self.needles = found
        self.windows: dict[int, list[tuple[bytes, int]]] = {}
        for needle in found:
            for j in range(len(needle) - WINDOW + 1):
                key = int.from_bytes(needle[j : j + WINDOW], "little")
                self.windows.setdefault(key, []).append((needle, j))
        self.keys = set(self.windows)

    def scan(self, hay: bytes) -> set[tuple[int, str]]:
        hits: set[tuple[int, str]] = set()
        usable = len(hay) - len(hay) % WINDOW
        words = array("Q")
        words.frombytes(hay[:usable])
        if words.itemsize != WINDOW or array("H", [1]).tobytes() != b"\x01\x00":
            pytest.skip("the scanner needs 64-bit little-endian words")
        step = 1 << 20
        for base in range(0, len(words), step):
            block = words[base : base + step]
            if not self.keys.intersection(block):
                continue
            for i, w in enumerate(block):
                for needle, j in self.windows.get(w, ()):
                    at = (base + i) * WINDOW - j
                    if at >= 0 and hay[at : at + len(needle)] == needle:
                        hits.add((at, self.needles[needle]))
        tail = hay[max(0, usable - 64) :]  # the last partial window: plain search
        for needle, what in self.needles.items():
            k = tail.find(needle)
            if k >= 0:
                hits.add((max(0, usable - 64) + k, what))
        return hits

    def scan_name(self, name: str) -> list[str]:
        low = name.encode()
        return [what for needle, what in self.needles.items() if needle in low or needle.lower() in low.lower()]


def scan_folder(scanner: Scanner, root: Path) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        hits += [f"{root.name}: name {rel}: {what}" for what in scanner.scan_name(rel)]
        if path.is_file():
            hits += [f"{root.name}: {rel} at {at}: {what}" for at, what in sorted(scanner.scan(path.read_bytes()))]
    return hits


def scan_bucket(scanner: Scanner, endpoint: str, bucket: str) -> tuple[list[str], int]:
    client = raw_client(endpoint)
    hits: list[str] = []
    versions = client.list_object_versions(Bucket=bucket).get("Versions", [])
    for v in versions:
        obj = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        body = obj["Body"].read()
        meta = " ".join([v["Key"], str(obj.get("Metadata", {})), str(obj.get("ETag", "")), v["VersionId"]])
        hits += [f"bucket: key {v['Key']}: {what}" for what in scanner.scan_name(meta)]
        hits += [f"bucket: {v['Key']} at {at}: {what}" for at, what in sorted(scanner.scan(body))]
    return hits, len(versions)


def object_ids(repo: Repository) -> set[bytes]:
    return {e.object_id for entries in repo.index.packs.values() for e in entries}


def stored_names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def packs_of(repo: Repository, ids: set[bytes]) -> set[str]:
    return {pid for pid, entries in repo.index.packs.items() if any(e.object_id in ids for e in entries)}


# ------------------------------------------------------------------------------ tests


@pytest.fixture
def keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keystore"
    monkeypatch.setenv("STRONGROOM_KEYSTORE", str(path))
    return path


def test_no_shared_ids_and_no_plaintext_hash_anywhere(
    tmp_path: Path,
    keystore: Path,
    moto_endpoint: str,  # noqa: F811
    make_bucket: MakeBucket,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
) -> None:
    src = dataset(tmp_path / "src")
    roots = {name: tmp_path / name for name in ("repo-a", "repo-b", "repo-c")}
    srs = {name: Strongroom.init(str(root), PASSPHRASE) for name, root in roots.items()}
    srs["repo-a"].commit(str(src), "same data")
    srs["repo-b"].commit(str(src), "same data")
    c_session = srs["repo-c"]._session
    scoped = {
        "s1": ver_svc.commit(c_session, str(src), "same data", branch="main", scope="s1").id,
        "s2": ver_svc.commit(c_session, str(src), "same data", branch="main", scope="s2").id,
        "": ver_svc.commit(c_session, str(src), "same data", branch="main").id,
    }
    bucket = make_bucket(lock=True)
    for name, sr in srs.items():
        backup_svc.remote_add(sr._session, name, f"s3://{bucket}/{name}", moto_endpoint, "us-east-1", "governance", 1)
        backup_svc.push(sr._session, name)

    repos = {name: Strongroom.open(str(root), PASSPHRASE)._session.open() for name, root in roots.items()}
    plains = {name: read_back(repo) for name, repo in repos.items()}
    originals = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    for name, plain in plains.items():  # the library gave back the real plaintext, chunk by chunk
        versions = 3 if name == "repo-c" else 1
        assert len(plain.files) == versions * len(originals)
        assert sorted(v for v in plain.files.values()) == sorted(list(originals.values()) * versions)
    # Each repository and each scope cut the same bytes at its own points (so the chunk needles differ per
    # copy, and equal stored sizes do not link the copies either).
    photo = "images/patient-0042-chest-xray-2026.bin"
    heads = {name: repo.read_refs().branches["main"].hex() for name, repo in repos.items()}
    cuts = [plains["repo-a"].cuts[f"{heads['repo-a']}:{photo}"], plains["repo-b"].cuts[f"{heads['repo-b']}:{photo}"]]
    cuts += [plains["repo-c"].cuts[f"{cid}:{photo}"] for cid in scoped.values()]
    assert all(len(c) >= 2 for c in cuts) and len({tuple(c) for c in cuts}) == len(cuts), cuts

    # 0 shared object ids, pack names, index names or other stored names across the repositories.
    ids = {name: object_ids(repo) for name, repo in repos.items()}
    names = {name: stored_names(root) for name, root in roots.items()}
    for x, y in (("repo-a", "repo-b"), ("repo-a", "repo-c"), ("repo-b", "repo-c")):
        assert not ids[x] & ids[y], (x, y)
        assert names[x] & names[y] <= FIXED_NAMES, (x, y, sorted(names[x] & names[y] - FIXED_NAMES)[:5])
        assert {n for n in names[x] if n.startswith(("data/", "index/"))}.isdisjoint(names[y])
    # ... and across the two scopes (and unscoped data) of repository C: trees and chunks.
    c_plain, c_repo = plains["repo-c"], repos["repo-c"]
    per_scope = {scope: c_plain.by_version[bytes.fromhex(cid)] for scope, cid in scoped.items()}
    for x, y in (("s1", "s2"), ("s1", ""), ("s2", "")):
        assert per_scope[x] and not per_scope[x] & per_scope[y], (x, y)
        assert not packs_of(c_repo, per_scope[x]) & packs_of(c_repo, per_scope[y]), (x, y)

    # 0 plaintext hashes in any byte or name of the repositories or the bucket.
    scanner = Scanner(needles(plains.values(), [p.name for p in src.rglob("*") if p.is_file()]))
    hits = [h for root in roots.values() for h in scan_folder(scanner, root)]
    bucket_hits, objects = scan_bucket(scanner, moto_endpoint, bucket)
    hits += bucket_hits
    scanned = sum(p.stat().st_size for root in roots.values() for p in root.rglob("*") if p.is_file())
    print(
        f"T12: {len(scanner.needles)} needles; {scanned} repository bytes, {objects} bucket object versions; "
        f"{len(hits)} hits; shared ids {len(ids['repo-a'] & ids['repo-b'])}"
    )
    assert objects > 30 and scanned > 15 << 20
    assert hits == []


def test_the_checks_find_unkeyed_ids_and_planted_hashes(
    tmp_path: Path, keystore: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks above can fail. With unkeyed ids (patched in this process only), two repositories of the
    same data share object ids. Hashes planted in a copy of a repository (raw at an unaligned offset inside a
    pack, hex in a file name, base64 in the config, uppercase hex at the very end of a file) are each found."""
    src = make_tree(tmp_path / "src", {f"record-{i:03d}.txt": f"row {i}\n".encode() * 50 for i in range(5)})
    roots = [tmp_path / "unkeyed-a", tmp_path / "unkeyed-b"]
    with monkeypatch.context() as patch:
        patch.setattr(idhash.IdHasher, "__call__", lambda self, data: bytes(blake3.blake3(data).digest()))
        for root in roots:
            Strongroom.init(str(root), PASSPHRASE).commit(str(src), "same data")
        a, b = (Strongroom.open(str(root), PASSPHRASE)._session.open() for root in roots)
        assert object_ids(a) & object_ids(b)  # the same data has the same ids

    root = tmp_path / "repo"
    Strongroom.init(str(root), PASSPHRASE).commit(str(src), "data")
    plain = read_back(Strongroom.open(str(root), PASSPHRASE)._session.open())
    scanner = Scanner(needles([plain], []))
    assert scan_folder(scanner, root) == []
    chunk = next(iter(plain.chunks.values()))
    whole = next(iter(plain.files.values()))
    planted = tmp_path / "planted"
    shutil.copytree(root, planted)
    pack = sorted((planted / "data").rglob("*"))[-1]
    data = bytearray(pack.read_bytes())
    assert len(data) > 200
    data[101 : 101 + 32] = blake3.blake3(whole).digest()
    pack.write_bytes(bytes(data))
    (planted / "data" / "ab" / hashlib.sha256(chunk).hexdigest()).parent.mkdir(exist_ok=True)
    (planted / "data" / "ab" / hashlib.sha256(chunk).hexdigest()).write_bytes(os.urandom(100))
    config = planted / "config"
    config.write_bytes(config.read_bytes() + base64.b64encode(hashlib.sha256(whole).digest()))
    refs = planted / "refs"
    refs.write_bytes(refs.read_bytes() + hashlib.sha256(chunk).hexdigest().upper().encode())
    found = scan_folder(scanner, planted)
    assert any("at 101: blake3 raw of a" in h for h in found), found
    assert any("name data/ab/" in h and "sha256 hex of a" in h for h in found), found
    assert any(h.startswith("planted: config at") and "sha256 base64" in h for h in found), found
    assert any(h.startswith("planted: refs at") and "sha256 HEX" in h for h in found), found
