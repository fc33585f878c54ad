"""T08, sampled drills: `verify --sample P%` checks a random share of the packs, `--sample n/t` a fixed slice.

What the implementation does (store/check.py, ``select_packs``): the candidate packs are every pack on
storage or in the index; ``P%`` draws ``s = max(1, ceil(n * P / 100))`` distinct packs uniformly *without*
replacement (``random.SystemRandom().sample``, which cannot be seeded); ``n/t`` takes the packs whose name's
first 8 hex digits modulo t equal n - 1. So with ``b`` bad packs among ``n`` the chance that one run finds
at least one is hypergeometric: ``1 - C(n - b, s) / C(n, s)``, not the ``1 - (1 - b/n)^s`` of
RELIABILITY.md (sampling with replacement; 0.7 pp lower here, closer than ±5 pp can tell apart).

The repository is built with the library's ``pack_size`` parameter (``Repository.create``) set to one byte, so
every chunk gets its own pack and a tiny dataset gives ``n`` = 100 packs (99 chunk packs and the pack holding
the tree and the commit). The 10 bad packs are chunk packs, which the default (non-sample) walk never reads:
only the sampled full check can find them.

The 1,600 statistical trials run in process through ``check.verify`` (one worker, no fork per trial) on a
``Repository`` opened over an in-memory copy of the damaged repository's files (``MemoryBackend``): the
sampler does not depend on the storage, and reading 64 KiB packs from disk made each trial cost two to
three times as much. The slices run on the folder itself, through ``check.verify`` and through the service
function the CLI calls (``Strongroom.verify``), as does one ``5%`` run; the S3 drill goes through
``service.backup.verify``. A spy on ``check.select_packs`` (it calls the real one and records its answer)
lets every trial check that it reported damage exactly when its sample held a bad pack.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.backends.local import LocalBackend
from strongroom.backends.memory import MemoryBackend
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.service import backup as backup_svc
from strongroom.store import check
from strongroom.store.pack import pack_path
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, make_tree
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401

CHUNK_PACKS = 99  # + 1 pack for the tree and the commit: n = 100
BAD = 10
PERCENT = 5
# 1,600 trials: with the tolerance of ±5 pp a correct implementation fails less than once in 10^4 runs (the
# exact binomial tail is computed below and asserted); RELIABILITY.md's 200 trials would fail about 1 run in 7.
TRIALS = 1600
TOLERANCE = 0.05
FALSE_FAILURE_BOUND = 1e-4
CHI2_Z = 4.265  # one-sided normal quantile of 10^-5: the uniformity check's share of the false-failure bound
SEED = 0x7008  # the test's own choices (which packs are bad); the implementation's sampler has no seed


# ------------------------------------------------------------------------------ helpers


def hypergeometric_detection(n: int, bad: int, s: int) -> float:
    """P(a uniform sample of s distinct packs out of n holds at least one of the bad ones)."""
    return 1 - math.comb(n - bad, s) / math.comb(n, s)


def binomial_outside(trials: int, p: float, tol: float) -> float:
    """P(|X/trials - p| > tol) for X ~ Binomial(trials, p): the chance the rate check fails on a correct
    implementation."""

    def pmf(x: int) -> float:
        log = math.lgamma(trials + 1) - math.lgamma(x + 1) - math.lgamma(trials - x + 1)
        return math.exp(log + x * math.log(p) + (trials - x) * math.log1p(-p))

    return sum(pmf(x) for x in range(trials + 1) if abs(x / trials - p) > tol)


def chi2_critical(df: int, z: float) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df) for a one-sided normal quantile z."""
    a = 2 / (9 * df)
    return df * (1 - a + z * math.sqrt(a)) ** 3


def slice_of(pack_id: str, t: int) -> int:
    """The documented rule (format.md §19): run i of t checks the packs whose name's first 8 hex digits
    modulo t equal i - 1. Returned 1-based."""
    return int(pack_id[:8], 16) % t + 1


def damaged_packs(damage: list[dict[str, str]] | list[check.Damage]) -> set[str]:
    names = {d["object"] if isinstance(d, dict) else d.what for d in damage}
    return {n.rsplit("/", 1)[-1] for n in names if n.startswith("data/")}


class SelectSpy:
    """Records every selection ``check.select_packs`` makes; the real function does the choosing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        real = check.select_packs

        def spy(pack_ids: list[str], sample: tuple[int, int] | float) -> list[str]:
            chosen = real(pack_ids, sample)
            self.calls.append(list(chosen))
            return chosen

        monkeypatch.setattr(check, "select_packs", spy)

    def last(self) -> list[str]:
        assert self.calls, "verify did not sample"
        return self.calls[-1]


def build_repository(
    root: Path, tmp: Path, chunk_packs: int = CHUNK_PACKS, env: Mapping[str, str] | None = None
) -> tuple[Strongroom, list[str], str]:
    """A repository of chunk_packs + 1 packs: (opened repository, chunk pack ids, id of the tree-and-commit
    pack)."""
    backend = LocalBackend(str(root))
    backend.ensure_root()
    Repository.create(backend, Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY, pack_size=1)  # a pack per chunk
    rnd = random.Random(SEED)
    src = make_tree(tmp / "src", {f"shard-{i:03}.bin": rnd.randbytes(300) for i in range(chunk_packs)})
    sr = Strongroom.open(str(root), PASSPHRASE, env=env)
    sr.commit(str(src), "shards")
    repo = sr._session.open()
    meta = [pid for pid, entries in repo.index.packs.items() if any(e.kind != 1 for e in entries)]
    chunks = sorted(set(repo.index.packs) - set(meta))
    assert len(meta) == 1 and len(chunks) == chunk_packs
    return sr, chunks, meta[0]


def damage(root: Path, pack_ids: list[str]) -> None:
    """Flip one byte in the first frame of each pack (ciphertext: the name no longer matches, nor the tag)."""
    for pid in pack_ids:
        path = root / pack_path(pid)
        data = bytearray(path.read_bytes())
        data[40] ^= 0x5A
        path.write_bytes(bytes(data))


def in_memory(root: Path) -> Repository:
    """The repository opened over an in-memory copy of its files."""
    mem = MemoryBackend()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith("locks/"):
            mem.objects[rel] = path.read_bytes()
    return Repository.open(mem, Secret(PASSPHRASE.encode()))


@dataclass
class Drill:
    root: Path
    sr: Strongroom
    everything: set[str]
    bad: set[str]


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Drill:
    """One damaged repository of 100 packs for the module's read-only drills (its own state and config
    folders: the per-test environment is not set up yet for a module fixture)."""
    tmp = tmp_path_factory.mktemp("t08")
    env = {
        "HOME": str(tmp / "home"),
        "STRONGROOM_STATE_DIR": str(tmp / "state"),
        "STRONGROOM_CACHE_DIR": str(tmp / "cache"),
        "STRONGROOM_CONFIG_DIR": str(tmp / "config"),
    }
    root = tmp / "repo"
    sr, chunk_packs, meta = build_repository(root, tmp, env=env)
    bad = set(random.Random(SEED + 1).sample(chunk_packs, BAD))
    damage(root, sorted(bad))
    everything = {*chunk_packs, meta}
    assert {name.rsplit("/", 1)[-1] for name, _ in LocalBackend(str(root)).list("data")} == everything
    # Without reading packs the damage is invisible: only the sampled (or full) pack check can find it.
    assert sr.verify().ok
    assert damaged_packs(sr.verify("full").damage) == bad
    return Drill(root, sr, everything, bad)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> SelectSpy:
    return SelectSpy(monkeypatch)


# ------------------------------------------------------------------------------ tests


def test_the_trial_design_is_not_flaky() -> None:
    n = CHUNK_PACKS + 1
    s = max(1, math.ceil(n * PERCENT / 100))
    p = hypergeometric_detection(n, BAD, s)
    assert s == 5 and round(p, 4) == 0.4162
    assert binomial_outside(TRIALS, p, TOLERANCE) + 1e-5 < FALSE_FAILURE_BOUND  # rate check + chi-square check
    assert binomial_outside(200, p, TOLERANCE) > 0.1  # why not RELIABILITY.md's 200 trials


def test_percent_sample_detection_rate_matches_the_hypergeometric_prediction(drill: Drill, spy: SelectSpy) -> None:
    everything, bad = drill.everything, drill.bad
    n = len(everything)
    s = max(1, math.ceil(n * PERCENT / 100))
    predicted = hypergeometric_detection(n, BAD, s)

    # Once through the service, on the folder, as `strongroom verify --sample 5%` runs it.
    res = drill.sr.verify(sample=f"{PERCENT}%")
    assert res.mode == "sample" and res.packs_checked == s
    assert (not res.ok) == bool(set(spy.last()) & bad)
    assert damaged_packs(res.damage) == set(spy.last()) & bad

    repo = in_memory(drill.root)
    share = check.parse_sample(f"{PERCENT}%")
    detected = 0
    picks: Counter[str] = Counter()
    for _ in range(TRIALS):
        report = check.verify(repo, sample=share, workers=1)
        chosen = spy.last()
        assert len(chosen) == len(set(chosen)) == s and set(chosen) <= everything
        assert report.packs_checked == s
        hit = set(chosen) & bad
        assert damaged_packs(report.damage) == hit  # every bad pack sampled is named, and nothing else
        assert report.ok == (not hit)
        detected += not report.ok
        picks.update(chosen)

    observed = detected / TRIALS
    print(f"T08: n={n} s={s} bad={BAD} trials={TRIALS} observed={observed:.4f} predicted={predicted:.4f}")
    assert abs(observed - predicted) <= TOLERANCE, (observed, predicted)
    # Every pack is equally likely: each was drawn, and the counts pass a chi-square test at 10^-5 (the
    # draws within a trial are without replacement, which only lowers the variance: the test is conservative).
    expected = TRIALS * s / n
    assert set(picks) == everything
    chi2 = sum((picks[p] - expected) ** 2 / expected for p in everything)
    assert chi2 < chi2_critical(n - 1, CHI2_Z), chi2


def test_slices_are_disjoint_and_cover_every_pack(drill: Drill, spy: SelectSpy) -> None:
    everything, bad = drill.everything, drill.bad
    repo = drill.sr._session.open()
    for t in (1, 2, 3, 7, 16):
        slices: list[set[str]] = []
        found: list[set[str]] = []
        for i in range(1, t + 1):
            report = check.verify(repo, sample=check.parse_sample(f"{i}/{t}"), workers=1)
            chosen = set(spy.last())
            assert chosen == {p for p in everything if slice_of(p, t) == i}  # the documented rule
            assert report.packs_checked == len(chosen)
            slices.append(chosen)
            found.append(damaged_packs(report.damage))
            assert found[-1] == chosen & bad
            assert report.ok == (not chosen & bad)
        assert sum(len(s) for s in slices) == len(everything), t  # disjoint ...
        assert set().union(*slices) == everything, t  # ... and together every pack: t runs cover everything
        assert sorted(p for f in found for p in f) == sorted(bad), t  # each bad pack found by exactly one run


def test_slices_through_the_service_find_every_bad_pack_once(drill: Drill) -> None:
    """`strongroom verify --sample 1/7` ... `7/7`: the user-facing numbers alone show full, disjoint coverage."""
    everything, bad = drill.everything, drill.bad
    t = 7
    checked = 0
    found: Counter[str] = Counter()
    for i in range(1, t + 1):
        res = drill.sr.verify(sample=f"{i}/{t}")
        assert res.mode == "sample"
        assert res.packs_checked == sum(1 for p in everything if slice_of(p, t) == i)
        checked += res.packs_checked
        hit = damaged_packs(res.damage)
        assert all(slice_of(p, t) == i for p in hit)
        assert res.ok == (not hit)
        found.update(hit)
    assert checked == len(everything)
    assert set(found) == bad and set(found.values()) == {1}


def test_a_broken_sampler_fails_the_rate_check(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate check can fail: a sampler that always takes the first s packs (sorted by name) detects either
    always or never, far from the prediction."""
    repo = in_memory(drill.root)
    monkeypatch.setattr(check, "select_packs", lambda ids, share: sorted(ids)[: max(1, math.ceil(len(ids) * share))])
    share = check.parse_sample(f"{PERCENT}%")
    rate = sum(not check.verify(repo, sample=share, workers=1).ok for _ in range(50)) / 50
    predicted = hypergeometric_detection(len(drill.everything), BAD, 5)
    assert rate in (0.0, 1.0) and abs(rate - predicted) > TOLERANCE


def test_backup_verify_sample_slices_cover_the_bucket(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    make_bucket: MakeBucket,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
    spy: SelectSpy,
) -> None:
    """`backup verify --sample` against S3 (moto), on a repository of 40 packs: 10 pack versions destroyed in
    the bucket (governance bypass, as an admin could); slices 1/2 and 2/2 each name exactly the destroyed
    packs of their slice and together check every pack once; a 5% drill checks 2 packs and reports damage
    exactly when its sample held a destroyed one. (The detection-rate statistics are not repeated against
    S3: the drill calls the same ``check.verify`` and ``select_packs``, which the spy confirms, and 1,600
    drills over HTTP would take minutes.)"""
    root = tmp_path / "repo"
    sr, chunk_packs, meta = build_repository(root, tmp_path, chunk_packs=39)
    everything = {*chunk_packs, meta}
    session = sr._session
    bucket = make_bucket(lock=True)
    backup_svc.remote_add(session, "off", f"s3://{bucket}/t08", moto_endpoint, "us-east-1", "governance", 1)
    backup_svc.push(session, "off")
    client = raw_client(moto_endpoint)
    listing = client.list_object_versions(Bucket=bucket, Prefix="t08/data/")["Versions"]
    by_pack = {v["Key"].rsplit("/", 1)[-1]: v for v in listing}
    assert set(by_pack) == everything
    bad = set(random.Random(SEED + 2).sample(chunk_packs, BAD))
    for pid in bad:
        v = by_pack[pid]
        client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)

    t = 2
    checked = 0
    found: Counter[str] = Counter()
    for i in range(1, t + 1):
        rep = backup_svc.verify(session, "off", f"{i}/{t}")
        assert rep.mode == "sample"
        assert set(spy.last()) == {p for p in everything if slice_of(p, t) == i}
        assert rep.packs_checked == len(spy.last())
        checked += rep.packs_checked
        hit = damaged_packs(rep.damage)
        assert hit == set(spy.last()) & bad
        assert rep.ok == (not hit)
        found.update(hit)
    assert checked == len(everything)
    assert set(found) == bad and set(found.values()) == {1}

    rep = backup_svc.verify(session, "off", f"{PERCENT}%")
    assert rep.packs_checked == 2
    assert damaged_packs(rep.damage) == set(spy.last()) & bad
    assert rep.ok == (not set(spy.last()) & bad)
    assert os.path.isdir(root)  # the local repository was only read


@pytest.mark.parametrize(("percent", "expected"), [("7%", 7), ("5%", 5), ("0.5%", 1), ("33%", 33), ("100%", 100)])
def test_a_percentage_samples_that_share_of_the_packs(percent: str, expected: int) -> None:
    """ceil(n·P/100), computed so that floating point does not add a pack (7 % of 100 was 8)."""
    packs = [f"{i:064x}" for i in range(100)]
    chosen = check.select_packs(packs, check.parse_sample(percent))
    assert len(chosen) == expected and len(set(chosen)) == expected and set(chosen) <= set(packs)
