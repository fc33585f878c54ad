"""backup release, backup prune and backup restore --version against a moto S3 server over real HTTP, with a
separate AWS profile per role (push, legal-hold, delete); a recording TCP proxy (tests/tcpproxy.py) shows
which access key each request used. Plus one audit event per backup command."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.backends.s3 import S3Backend
from strongroom.backup import engine
from strongroom.backup.manifest import MANIFEST_NAME
from strongroom.backup.remotes import IncidentOpen, RemoteStore
from strongroom.errors import InputError
from strongroom.service import backup as backup_svc
from strongroom.service import gc as gc_svc
from strongroom.service import merge as merge_svc
from tests.conftest import PASSPHRASE, Cli, make_tree, tree_snapshot
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401
from tests.tcpproxy import Proxy

DAY = 86400
KEYS = {"pusher": "PUSHKEY", "holder": "HOLDKEY", "deleter": "DELETEKEY"}


def _rand(n: int, seed: int) -> bytes:
    return __import__("random").Random(seed).randbytes(n)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(moto_endpoint)
    yield p
    p.close()


@pytest.fixture
def roles(s3_env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """Three profiles with their own access keys in the shared credentials file; the environment still holds
    the default ("testing") credential, which a named profile must not fall back to."""
    text = "".join(f"[{p}]\naws_access_key_id = {k}\naws_secret_access_key = secret-{p}\n" for p, k in KEYS.items())
    Path(s3_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(text)
    return s3_env


@pytest.fixture
def world(tmp_path: Path, proxy: Proxy, make_bucket: MakeBucket, roles: dict[str, str],  # noqa: F811
          moto_endpoint: str) -> dict[str, Any]:  # noqa: F811
    src = make_tree(tmp_path / "src", {"a/x.csv": b"id,v\n" + b"1,2\n" * 5000, "b/y.bin": _rand(300_000, 1)})
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    sr.commit(str(src), "v1")
    bucket = make_bucket(lock=True)
    session = sr._session
    backup_svc.remote_add(session, "off", f"s3://{bucket}/r", proxy.endpoint, "us-east-1", "governance", 1,
                          push_profile="pusher", legal_hold_profile="holder", delete_profile="deleter")
    return {"sr": sr, "session": session, "bucket": bucket, "src": src, "proxy": proxy, "moto": moto_endpoint}


def _engine_push(w: dict[str, Any], now: float | None = None) -> engine.PushReport:
    session = w["session"]
    remote = RemoteStore(session.settings.state_dir).get("off")
    s3 = S3Backend(w["bucket"], "r", endpoint_url=w["proxy"].endpoint, region="us-east-1", profile="pusher")
    return engine.push(session.open(), s3, remote, lambda: [], now=now)


def _keys_since(proxy: Proxy, start: int) -> set[str]:
    return {r.access_key for r in proxy.requests[start:]}


def _snap(sr: Strongroom, version: str, out: Path) -> dict[str, Any]:
    sr.checkout(version, str(out))
    return tree_snapshot(out)


def test_release_prune_restore_version_with_role_credentials(world: dict[str, Any], tmp_path: Path) -> None:
    sr, session, bucket, src, proxy = world["sr"], world["session"], world["bucket"], world["src"], world["proxy"]
    old = time.time() - 10 * DAY  # pushes "ten days ago": their 1-day retention has passed by now
    v1 = sr.log()[0].id
    start = len(proxy.requests)
    _engine_push(world, old)
    (src / "model").mkdir()
    (src / "model" / "weights.bin").write_bytes(_rand(400_000, 2))
    sr.commit(str(src), "v2: the released model")
    v2 = sr.log()[0].id
    _engine_push(world, old)
    assert _keys_since(proxy, start) == {"PUSHKEY"}
    assert not [r for r in proxy.requests[start:] if r.method == "DELETE" or "legal-hold" in r.path]
    v2_files = _snap(sr, v2, tmp_path / "v2")

    start = len(proxy.requests)
    rel = backup_svc.release(session, "off", v2, legal_hold=True)
    assert rel.legal_hold and rel.objects >= 6
    holds = [r for r in proxy.requests[start:] if "legal-hold" in r.path]
    assert len(holds) == rel.objects and _keys_since(proxy, start) == {"HOLDKEY"}

    (src / "scratch.bin").write_bytes(_rand(500_000, 3))
    sr.commit(str(src), "v3: scratch work, never released")
    v3 = sr.log()[0].id
    _engine_push(world, old)
    client = raw_client(world["moto"])
    scratch_packs = {v["Key"] for v in client.list_object_versions(Bucket=bucket, Prefix="r/data/")["Versions"]}
    merge_svc.reset(session, "main", v1)  # v2 and v3 leave the repository; v2 stays held in the bucket
    gc_svc.gc(session, keep_unreachable_days=0)
    _engine_push(world, old)
    client.put_object(Bucket=bucket, Key="r/refs", Body=b"garbage from someone holding the push key")

    start = len(proxy.requests)
    with pytest.raises(InputError, match="--keep-last"):
        backup_svc.prune(session, "off")
    dry = backup_svc.prune(session, "off", keep_last=1, dry_run=True, now=time.time() + 2 * DAY)
    assert dry.deleted > 0 and client.list_object_versions(Bucket=bucket, Prefix="r/")["Versions"]
    before = {(v["Key"], v["VersionId"]) for v in client.list_object_versions(Bucket=bucket, Prefix="r/")["Versions"]}
    fresh = backup_svc.prune(session, "off", keep_last=1)  # with the real clock every version is too young
    assert fresh.deleted == 0 and fresh.young > 0
    pruned = backup_svc.prune(session, "off", keep_last=1, now=time.time() + 2 * DAY)
    after = {(v["Key"], v["VersionId"]) for v in client.list_object_versions(Bucket=bucket, Prefix="r/")["Versions"]}
    assert pruned.deleted == dry.deleted == len(before - after) > 0
    assert pruned.kept_manifests == 2 and pruned.manifests == 4  # the newest, and the held one (v2's)
    assert ("r/refs" in {k for k, _ in before - after})  # the garbage version, among others
    deletes = [r for r in proxy.requests[start:] if r.method == "DELETE"]
    assert len(deletes) == pruned.deleted and _keys_since(proxy, start) == {"DELETEKEY"}
    gone = {k for k, _ in before - after}
    assert gone & scratch_packs  # v3's own pack went; v2's packs are held
    manifests = [v for v in client.list_object_versions(Bucket=bucket, Prefix="r/manifest")["Versions"]]
    assert len(manifests) == 2

    # every kept backup still verifies and restores; v3 (pruned) is refused with one clear error
    assert backup_svc.verify(session, "off").ok
    r2 = backup_svc.restore(session, "off", str(tmp_path / "only-v2"), version=v2)
    assert r2.versions == 2  # v2 and its parent v1
    restored = Strongroom.open(str(tmp_path / "only-v2"), PASSPHRASE)
    assert _snap(restored, v2, tmp_path / "v2-again") == v2_files
    assert restored.verify("full").ok
    with pytest.raises(Exception, match="holds version"):
        backup_svc.restore(session, "off", str(tmp_path / "only-v3"), version=v3[:12])

    # retention on the held objects of v2: a legal hold blocks even a governance bypass
    held = next(v for v in client.list_object_versions(Bucket=bucket, Prefix="r/manifest")["Versions"]
                if client.head_object(Bucket=bucket, Key="r/manifest", VersionId=v["VersionId"])
                .get("ObjectLockLegalHoldStatus") == "ON")
    with pytest.raises(client.exceptions.ClientError):
        client.delete_object(Bucket=bucket, Key="r/manifest", VersionId=held["VersionId"],
                             BypassGovernanceRetention=True)


def test_restore_version_fetches_only_what_it_needs(world: dict[str, Any], tmp_path: Path, cli: Cli) -> None:
    sr, src = world["sr"], world["src"]
    v1 = sr.log()[0].id
    (src / "big.bin").write_bytes(_rand(2_000_000, 4))
    sr.commit(str(src), "v2")
    full = backup_svc.push(world["session"], "off")
    v1_files = _snap(sr, v1, tmp_path / "v1")
    shutil.rmtree(tmp_path / "repo")
    r = cli("backup", "restore", "off", "--version", v1[:10], "--to", str(tmp_path / "v1-only"),
            extra_env=world_env(world))
    assert r.code == 0, r.err
    assert f"version {v1[:16]}" in r.out and "1 versions" in r.out
    restored = Strongroom.open(str(tmp_path / "v1-only"), PASSPHRASE)
    assert [c.id for c in restored.log()] == [v1]
    assert _snap(restored, v1, tmp_path / "v1-again") == v1_files
    size = sum(p.stat().st_size for p in (tmp_path / "v1-only" / "data").rglob("*") if p.is_file())
    assert size < full.total_bytes - 1_900_000  # the 2 MB of v2 were not fetched
    r = cli("backup", "restore", "off", "--version", "no-such-branch", "--to", str(tmp_path / "x"),
            extra_env=world_env(world))
    assert r.code == 1 and "holds version no-such-branch" in r.err and "Traceback" not in r.err


def world_env(w: dict[str, Any]) -> dict[str, str]:
    """The AWS settings of the test (credentials file with the role profiles) for `strongroom` subprocesses."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def test_release_retention_never_shortens_and_bad_input(world: dict[str, Any], cli: Cli) -> None:
    backup_svc.push(world["session"], "off")
    env = world_env(world)
    r = cli("backup", "release", "off", "main", "--retain-days", "5", extra_env=env)
    assert r.code == 0, r.err
    assert "retained until" in r.out
    remote = RemoteStore(world["session"].settings.state_dir).get("off")
    s3 = S3Backend(world["bucket"], "r", endpoint_url=remote.endpoint, region="us-east-1", profile="pusher")
    m = engine.find_manifest(s3, engine.accept_for(world["session"].open()))
    assert m is not None
    horizon = time.time() + 5 * DAY - 60
    untils = {}
    for name, e in m[0].entries.items():
        head = s3.head(name, e.version_id)
        assert head.retain_until is not None and head.retain_until.timestamp() >= horizon, name
        untils[name] = head.retain_until
    assert s3.head(MANIFEST_NAME, m[1]).retain_until.timestamp() >= horizon  # type: ignore[union-attr]
    assert cli("backup", "release", "off", "main", "--retain-days", "2", extra_env=env).code == 0
    assert all(s3.head(n, e.version_id).retain_until == untils[n] for n, e in m[0].entries.items())

    for args, message in [
        (["main", "--retain-days", "9999"], "above the maximum"),
        (["main"], "--retain-days N, --legal-hold"),
        (["no-such-version", "--legal-hold"], "no-such-version"),
    ]:
        r = cli("backup", "release", "off", *args, extra_env=env)
        assert r.code == 2 and message in r.err, r.err
        assert len(r.err.strip().splitlines()) <= 2 and "Traceback" not in r.err
    assert cli("remote", "add", "plain", f"s3://{world['bucket']}/p", "--endpoint", remote.endpoint or "",
               extra_env=env).code == 0
    r = cli("backup", "release", "plain", "main", "--legal-hold", extra_env=env)
    assert r.code == 2 and "no legal-hold credential" in r.err, r.err
    r = cli("backup", "prune", "plain", "--keep-last", "1", extra_env=env)
    assert r.code == 2 and "no delete credential" in r.err, r.err
    r = cli("remote", "set", "plain", "--delete-profile", "nobody-configured-this", extra_env=env)
    assert r.code == 0
    r = cli("backup", "prune", "plain", "--keep-last", "1", extra_env=env)
    assert r.code == 2 and "nobody-configured-this" in r.err and "secret" not in r.err, r.err


# ----------------------------------------------------------------------------- one audit event per command


def _events(w: dict[str, Any], action: str) -> list[Any]:
    s = Strongroom.open(w["sr"]._session.settings.repo or "", PASSPHRASE)._session
    log = s.audit_log()
    assert log is not None
    return [e for e in log.query() if e.action == action]


def test_push_is_audited(world: dict[str, Any]) -> None:
    rep = backup_svc.push(world["session"], "off")
    (ev,) = _events(world, "backup.push")
    assert ev.outcome == "ok" and ev.details["remote"] == "off"
    assert ev.details["manifest_version"] == rep.manifest_version and ev.details["uploaded"] == rep.uploaded


def test_push_refused_by_an_incident_is_audited(world: dict[str, Any]) -> None:
    inc = backup_svc.incident_open(world["session"], "canary touched")
    with pytest.raises(IncidentOpen):
        backup_svc.push(world["session"], "off")
    (ev,) = _events(world, "backup.push")
    assert ev.outcome == "denied" and ev.details["incident"] == inc.id
    assert [e.details["incident"] for e in _events(world, "incident.open")] == [inc.id]


def test_verify_is_audited_ok_and_failed(world: dict[str, Any]) -> None:
    backup_svc.push(world["session"], "off")
    assert backup_svc.verify(world["session"], "off").ok
    client = raw_client(world["moto"])
    victim = max(client.list_object_versions(Bucket=world["bucket"], Prefix="r/data/")["Versions"],
                 key=lambda v: v["Size"])
    client.delete_object(Bucket=world["bucket"], Key=victim["Key"], VersionId=victim["VersionId"],
                         BypassGovernanceRetention=True)
    assert not backup_svc.verify(world["session"], "off").ok
    assert [e.outcome for e in _events(world, "backup.verify")] == ["ok", "failed"]


def test_restore_is_audited(world: dict[str, Any], tmp_path: Path) -> None:
    backup_svc.push(world["session"], "off")
    backup_svc.restore(world["session"], "off", str(tmp_path / "copy"))
    one = backup_svc.restore(world["session"], "off", str(tmp_path / "one"), version="main")
    full, only = _events(world, "backup.restore")
    assert full.outcome == "ok" and full.details["to"] == str(tmp_path / "copy") and full.details["manifest_version"]
    assert only.outcome == "ok" and only.targets["version"] == one.version == world["sr"].log()[0].id


def test_release_is_audited(world: dict[str, Any]) -> None:
    backup_svc.push(world["session"], "off")
    rep = backup_svc.release(world["session"], "off", "main", legal_hold=True)
    (ev,) = _events(world, "backup.release")
    assert ev.outcome == "ok" and ev.targets["version"] == rep.version and ev.details["legal_hold"] is True


def test_prune_is_audited(world: dict[str, Any]) -> None:
    _engine_push(world, time.time() - 10 * DAY)
    (world["src"] / "n.bin").write_bytes(b"new")
    world["sr"].commit(str(world["src"]), "v2")
    _engine_push(world, time.time() - 10 * DAY)
    rep = backup_svc.prune(world["session"], "off", keep_last=1, now=time.time() + 2 * DAY)
    (ev,) = _events(world, "backup.prune")
    assert ev.outcome == "ok" and ev.details["deleted"] == rep.deleted > 0 and ev.details["keep_last"] == 1


def test_prune_refuses_when_a_kept_backup_lost_data(world: dict[str, Any]) -> None:
    _engine_push(world, time.time() - 10 * DAY)
    client = raw_client(world["moto"])
    victim = client.list_object_versions(Bucket=world["bucket"], Prefix="r/index/")["Versions"][0]
    client.delete_object(Bucket=world["bucket"], Key=victim["Key"], VersionId=victim["VersionId"])
    with pytest.raises(Exception, match="data seems to be missing"):
        backup_svc.prune(world["session"], "off", keep_last=1, now=time.time() + 2 * DAY)
    (ev,) = _events(world, "backup.prune")
    assert ev.outcome == "failed"
