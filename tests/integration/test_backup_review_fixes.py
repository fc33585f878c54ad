"""Fixes of the second backup review, against a moto S3 server over real HTTP: prune of a whole-bucket remote
leaves a backup under ``data/<name>/`` alone (exact key shapes, listed level by level); a replayed older
manifest does not make verify, restore, restore --version or release use old data; push uploads again an
object the bucket lost; S3 errors of verify and restore are one line (exit 2); verify retries a throttled
read and tells "could not read" from damage; bad input and a bad region exit 2 with a clear line."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.backends.s3 import S3Backend, md5_b64
from strongroom.backup import engine
from strongroom.backup.manifest import MANIFEST_NAME
from strongroom.backup.remotes import RemoteStore
from strongroom.service import backup as backup_svc
from tests.conftest import PASSPHRASE, Cli, make_tree
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401
from tests.tcpproxy import Proxy, s3_error

DAY = 86400
PASS_B = "the other repository's passphrase 9b1e"


def _rand(n: int, seed: int) -> bytes:
    return __import__("random").Random(seed).randbytes(n)


@pytest.fixture
def w(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """Repository A (committed once), an AWS profile ``deleter`` in the credentials file, and A's passphrase
    as the client's signing passphrase."""
    (tmp_path / "signpass").write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("STRONGROOM_SIGNING_PASSPHRASE_FILE", str(tmp_path / "signpass"))
    Path(s3_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        "[deleter]\naws_access_key_id = DELETEKEY\naws_secret_access_key = secret-deleter\n"
    )
    src = make_tree(tmp_path / "src", {"a.bin": _rand(400_000, 1)})
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    sr.commit(str(src), "v1")
    return {"sr": sr, "session": sr._session, "src": src, "moto": moto_endpoint, "tmp": tmp_path}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "STRONGROOM_SIGNING"))}


def _add_remote(w: dict[str, Any], name: str, url: str, lock: bool = False, endpoint: str | None = None) -> None:
    backup_svc.remote_add(
        w["session"],
        name,
        url,
        endpoint or w["moto"],
        "us-east-1",
        "governance" if lock else None,
        2 if lock else 0,
        delete_profile="deleter",
    )


def _listing(w: dict[str, Any], bucket: str, prefix: str = "") -> set[tuple[str, str]]:
    out = raw_client(w["moto"]).list_object_versions(Bucket=bucket, Prefix=prefix)
    return {(v["Key"], v["VersionId"]) for v in out.get("Versions", [])}


def _one_line(r: Any) -> bool:
    return len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err + r.out


# ----------------------------------------------------------------------------- 1. prune's scope: exact shapes


def test_prune_of_a_whole_bucket_leaves_a_backup_under_data_alone(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Repository B backed up at s3://BUCKET/data/x (a prefix under one of strongroom's folder names), and
    objects of near-strongroom shapes that are no strongroom name: A's prune of s3://BUCKET deletes its own
    older backup only, and never lists below data/x/."""
    bucket = make_bucket(lock=False)
    _add_remote(w, "root", f"s3://{bucket}")
    _add_remote(w, "teamb", f"s3://{bucket}/data/x")
    b = Strongroom.init(str(w["tmp"] / "repoB"), PASS_B)
    b.commit(str(make_tree(w["tmp"] / "srcB", {"b.bin": _rand(300_000, 2)})), "B v1")
    backup_svc.push(b._session, "teamb")
    client = raw_client(w["moto"])
    hex64 = "ab" + "0" * 62
    aliens = [
        f"data/ab/{hex64}.txt",  # not a content name
        f"data/cd/{hex64}",  # in the wrong two-digit folder
        "data/ab/notes/readme",
        "index/notes",
        "keys/0123",
        f"audit/{'0' * 16}/notes/x",
        "manifests/other",
    ]
    for key in aliens:
        for _ in range(2):  # an older version too: prune deletes older versions of its own names
            client.put_object(Bucket=bucket, Key=key, Body=b"not strongroom's")
    backup_svc.push(w["session"], "root")
    (w["src"] / "new.bin").write_bytes(_rand(100_000, 3))
    w["sr"].commit(str(w["src"]), "v2")
    backup_svc.push(w["session"], "root")
    others = _listing(w, bucket, "data/x/") | {v for k in aliens for v in _listing(w, bucket, k)}
    assert len([k for k, _ in others if k.startswith("data/x/data/")]) > 0

    listed: list[str] = []
    real = S3Backend.versions

    def spy(self: S3Backend, prefix: str = "", *, top: bool = False) -> Any:
        listed.append(prefix)
        return real(self, prefix, top=top)

    with monkeypatch.context() as m:
        m.setattr(S3Backend, "versions", spy)
        report = backup_svc.prune(w["session"], "root", keep_last=1, now=time.time() + 2 * DAY)
    assert report.deleted > 0 and MANIFEST_NAME in report.deleted_names  # the root's own older backup
    assert not [n for n in report.deleted_names if n.startswith("data/x/") or n in aliens], report.deleted_names
    assert others <= _listing(w, bucket)
    assert listed and not [p for p in listed if p.startswith(("data/x", "manifests"))], listed
    assert backup_svc.verify(b._session, "teamb").ok
    assert backup_svc.verify(w["session"], "root").ok


# ----------------------------------------------------------------------------- 2. a replayed manifest


def test_a_replayed_older_manifest_is_not_taken_for_the_newest(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    cli: Cli,
) -> None:
    """Someone with the push credential copies the first (validly signed) manifest on top of the key: verify,
    restore, restore --version and release still use the newest signed manifest, and say what they saw."""
    bucket = make_bucket(lock=True)
    _add_remote(w, "off", f"s3://{bucket}/p", lock=True)
    backup_svc.push(w["session"], "off")
    client = raw_client(w["moto"])
    (old,) = [vid for _, vid in _listing(w, bucket, "p/manifest")]
    (w["src"] / "b.bin").write_bytes(_rand(200_000, 4))
    v2 = w["sr"].commit(str(w["src"]), "v2 (important new data)")
    new = backup_svc.push(w["session"], "off").manifest_version
    assert new and new != old
    time.sleep(1.1)  # S3 dates have one-second steps: the replay is the newest version by S3's date
    key = "p/manifest"
    replay = client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key, "VersionId": old})
    assert client.head_object(Bucket=bucket, Key=key)["VersionId"] == replay["VersionId"]

    r = cli("backup", "verify", "off", extra_env=_env())
    assert r.code == 0, r.err
    assert f"manifest {new} of" in r.err and "replayed" in r.err and replay["VersionId"] in r.err, r.err
    r = cli("backup", "restore", "off", "--to", str(w["tmp"] / "all"), extra_env=_env())
    assert r.code == 0, r.err
    assert "2 versions" in r.out and f"from manifest {new}" in r.out and "replayed" in r.err, r.out + r.err
    r = cli("backup", "restore", "off", "--version", "main", "--to", str(w["tmp"] / "one"), extra_env=_env())
    assert r.code == 0, r.err
    assert f"from manifest {new}" in r.out and "replayed" in r.err, r.out + r.err
    assert f"version {v2.id[:16]}" in r.out, r.out
    report = backup_svc.release(w["session"], "off", "main", retain_days=3)
    assert report.manifest_version == new and report.manifest_warnings, report
    found = engine.find_manifest(
        S3Backend(bucket, "p", endpoint_url=w["moto"]), engine.accept_for(w["sr"]._session.open())
    )
    assert found is not None and found.version_id == new and found.manifest.created_ns > 0


# ----------------------------------------------------------------------------- 3. push heals a lost object


def _delete_largest_pack(w: dict[str, Any], bucket: str) -> str:
    """Delete the largest pack version (an admin bypassing GOVERNANCE; equally a lifecycle rule)."""
    client = raw_client(w["moto"])
    versions = client.list_object_versions(Bucket=bucket, Prefix="p/data/")["Versions"]
    v = max((v for v in versions if v["IsLatest"]), key=lambda v: v["Size"])
    client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)
    return str(v["Key"]).removeprefix("p/")


def test_push_uploads_again_what_the_bucket_lost(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = make_bucket(lock=True)
    _add_remote(w, "off", f"s3://{bucket}/p", lock=True)
    backup_svc.push(w["session"], "off")
    lost = _delete_largest_pack(w, bucket)
    r = cli("backup", "verify", "off", extra_env=_env())
    assert r.code == 1 and lost in r.out, r.out + r.err
    # --check lists the bucket: the lost pack goes up again at once
    r = cli("backup", "push", "off", "--check", extra_env=_env())
    assert r.code == 0, r.err
    assert "1 lost from the bucket and uploaded again" in r.out, r.out
    assert backup_svc.verify(w["session"], "off").ok

    # Lost again; a push that extends retention (two days later) finds the version gone and heals it
    lost = _delete_largest_pack(w, bucket)
    (w["src"] / "c.bin").write_bytes(_rand(1000, 5))
    w["sr"].commit(str(w["src"]), "v2")
    remote = RemoteStore(w["session"].settings.state_dir).get("off")
    s3 = S3Backend(bucket, "p", endpoint_url=w["moto"], region="us-east-1")
    report = engine.push(w["session"].open(), s3, remote, lambda: [], now=time.time() + 2 * DAY)
    assert report.healed == 1 and report.extended > 0, report
    found = engine.find_manifest(s3, engine.accept_for(w["session"].open()))
    assert found is not None and found.version_id == report.manifest_version
    assert s3.head(lost, found.manifest.entries[lost].version_id).size == found.manifest.entries[lost].size
    assert backup_svc.verify(w["session"], "off").ok

    # Lost, and a copy of the same bytes (as an interrupted push leaves one) is taken instead, but it vanishes
    # too: one clear error (push interrupted), no manifest written
    lost = _delete_largest_pack(w, bucket)
    data = (w["tmp"] / "repo" / lost).read_bytes()
    raw_client(w["moto"]).put_object(Bucket=bucket, Key=f"p/{lost}", Body=data, ContentMD5=md5_b64(data))
    real = S3Backend.extend_retention

    def gone(self: S3Backend, name: str, version_id: str | None, lock: Any) -> Any:
        if name == lost:
            raise engine.ObjectMissing(name)
        return real(self, name, version_id, lock)

    monkeypatch.setattr(S3Backend, "extend_retention", gone)
    manifests = engine.manifest_versions(s3)
    with pytest.raises(engine.PushInterrupted, match=f"{lost} disappeared") as e:
        engine.push(w["session"].open(), s3, remote, lambda: [], now=time.time() + 4 * DAY)
    assert e.value.exit_code == 1 and "\n" not in str(e.value)
    assert engine.manifest_versions(s3) == manifests


# ----------------------------------------------------------------------------- 4. error paths


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(moto_endpoint)
    yield p
    p.close()


def test_s3_errors_of_verify_and_restore_are_one_line(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    proxy: Proxy,
    cli: Cli,
) -> None:
    """ListObjectVersions refused (a read credential without s3:ListBucketVersions): one line, exit 2, not
    an internal error (exit 3). (Throttled for good is the same path, after retries that take a minute.)"""
    bucket = make_bucket(lock=True)
    _add_remote(w, "off", f"s3://{bucket}/p", lock=True, endpoint=proxy.endpoint)
    backup_svc.push(w["session"], "off")
    for status, code in ((403, "AccessDenied"),):
        proxy.answer(r"^GET \S*\?versions", s3_error(status, code))
        r = cli("backup", "verify", "off", extra_env=_env())
        assert r.code == 2 and _one_line(r) and code in r.err and "verify of" in r.err, r.err
        r = cli("backup", "restore", "off", "--to", str(w["tmp"] / f"r{status}"), extra_env=_env())
        assert r.code == 2 and _one_line(r) and code in r.err and "restore from" in r.err, r.err
    proxy.answer(None)
    assert cli("backup", "restore", "off", "--to", str(w["tmp"] / "r"), extra_env=_env()).code == 0


def test_verify_retries_a_throttled_read_and_tells_unread_from_damaged(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    proxy: Proxy,
    cli: Cli,
) -> None:
    bucket = make_bucket(lock=True)
    _add_remote(w, "off", f"s3://{bucket}/p", lock=True, endpoint=proxy.endpoint)
    backup_svc.push(w["session"], "off")
    index = rf"^GET /{bucket}/p/index/"
    # Throttled six times in a row: more than botocore's five attempts, so the drill's own retry is needed
    proxy.answer(index, s3_error(503, "SlowDown"), times=6)
    r = cli("backup", "verify", "off", extra_env=_env())
    assert r.code == 0 and "ok" in r.err, r.out + r.err
    assert len(proxy.answered) == 6
    # Throttled for good: exit 2, "unread" lines and no "damaged" line
    proxy.answer(index, s3_error(503, "SlowDown"))
    r = cli("backup", "verify", "off", extra_env=_env())
    assert r.code == 2, r.out + r.err
    assert "unread\tindex/" in r.out and "could not read" in r.out and "damaged" not in r.out, r.out
    assert "INCOMPLETE" in r.err and "Traceback" not in r.err, r.err
    proxy.answer(None)
    assert cli("backup", "verify", "off", extra_env=_env()).code == 0


def test_bad_keep_within_and_region_exit_2(w: dict[str, Any], make_bucket: MakeBucket, cli: Cli) -> None:  # noqa: F811
    bucket = make_bucket(lock=False)
    _add_remote(w, "off", f"s3://{bucket}/p")
    backup_svc.push(w["session"], "off")
    for days in ("9" * 400, "9" * 20, "36501"):
        r = cli("backup", "prune", "off", "--keep-within", days, extra_env=_env())
        assert r.code == 2 and _one_line(r) and "36500" in r.err and days not in r.err, r.err
    r = cli("backup", "prune", "off", "--keep-within", "36500", "--dry-run", extra_env=_env())
    assert r.code == 0, r.err
    # every refused prune is in the audit log, a number no event can hold as a (cut) string
    r = cli("audit", "log", "--action", "backup.prune", "--json", extra_env=_env())
    kept = [(e["outcome"], e["details"].get("keep_within")) for e in json.loads(r.out)]
    assert kept == [("failed", "9" * 400), ("failed", "9" * 20), ("failed", 36501), ("ok", 36500)], kept
    args = ["--endpoint", w["moto"], "--region", "not a region!"]
    r = cli("remote", "add", "z", f"s3://{bucket}/q", *args, extra_env=_env())
    assert r.code == 2 and _one_line(r) and "invalid S3 endpoint or region" in r.err, r.err
    r = cli("backup", "restore", f"s3://{bucket}/p", *args, "--to", str(w["tmp"] / "r"), extra_env=_env())
    assert r.code == 2 and _one_line(r) and "invalid S3 endpoint or region" in r.err, r.err
