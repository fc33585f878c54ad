"""Offsite backup against a moto S3 server over real HTTP (tests/s3server.py): push (incremental, resumed,
with retention), restore bit-exact after the local repository is lost, an attacker holding the bucket
credentials, incidents, and bad remotes. Pushes run in-process through the service layer; restore, verify
and the exit-code contract run the real `strongroom` command."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.backends.s3 import S3Backend
from strongroom.backup import engine
from strongroom.backup.manifest import Manifest
from strongroom.backup.remotes import IncidentOpen, IncidentStore, Remote, RemoteStore
from strongroom.errors import InputError
from strongroom.service import backup as backup_svc
from tests.conftest import PASSPHRASE, Cli, make_tree, tree_snapshot
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401


def _files(seed: int, n: int = 12) -> dict[str, bytes]:
    rnd = __import__("random").Random(seed)
    return {f"d{i % 3}/f{i}.bin": rnd.randbytes(rnd.randint(1, 200_000)) for i in range(n)} | {
        "big.bin": rnd.randbytes(3 << 20)}


@pytest.fixture
def setup(tmp_path: Path, moto_endpoint: str, make_bucket: MakeBucket, s3_env: dict[str, str]):  # noqa: F811
    src = make_tree(tmp_path / "src", _files(1))
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    sr.commit(str(src), "v1")
    bucket = make_bucket(lock=True)
    session = sr._session
    backup_svc.remote_add(session, "off", f"s3://{bucket}/team/repo", moto_endpoint, "us-east-1", "governance", 2)
    return sr, session, bucket, src


def _cli(cli: Cli, s3_env: dict[str, str]):  # noqa: F811
    return lambda *args, **kw: cli(*args, extra_env=s3_env, **kw)


def _versions(sr: Strongroom, out: Path) -> dict[str, dict]:
    snaps = {}
    for c in sr.log():
        dest = out / c.id
        sr.checkout(c.id, str(dest))
        snaps[c.id] = tree_snapshot(dest)
    return snaps


def test_push_incremental_restore_bit_exact(setup, tmp_path: Path, cli: Cli, s3_env: dict[str, str],  # noqa: F811
                                            moto_endpoint: str) -> None:  # noqa: F811
    sr, session, bucket, src = setup
    first = backup_svc.push(session, "off")
    assert first.uploaded == first.objects and first.manifest_version and first.bytes_sent >= first.total_bytes
    again = backup_svc.push(session, "off")  # sends only the audit event the first push sealed afterwards
    assert again.data_bytes_sent == 0 and again.bytes_sent < 20_000 and not again.resumed
    remote = RemoteStore(session.settings.state_dir).get("off")
    s3 = S3Backend(bucket, "team/repo", endpoint_url=moto_endpoint, region="us-east-1")
    engine.push(session.open(), s3, remote, lambda: [])  # the second push's own event
    idle = engine.push(session.open(), s3, remote, lambda: [])
    assert idle.up_to_date and idle.uploaded == 0 and idle.bytes_sent == 0
    (src / "d0" / "f0.bin").write_bytes(os.urandom(5000))
    sr.commit(str(src), "v2")
    third = backup_svc.push(session, "off")
    assert 0 < third.bytes_sent < third.total_bytes * 0.5 and not third.up_to_date
    assert third.uploaded < third.objects
    before = _versions(sr, tmp_path / "before")
    assert len(before) == 2

    shutil.rmtree(tmp_path / "repo")
    run = _cli(cli, s3_env)
    r = run("backup", "restore", f"s3://{bucket}/team/repo", "--endpoint", moto_endpoint, "--to",
            str(tmp_path / "restored"))
    assert r.code == 0, r.err
    assert "2 versions" in r.out
    restored = Strongroom.open(str(tmp_path / "restored"), PASSPHRASE)
    assert _versions(restored, tmp_path / "after") == before
    assert restored.verify("full").ok


def test_attacker_with_bucket_credentials(setup, tmp_path: Path, cli: Cli, s3_env: dict[str, str],  # noqa: F811
                                          moto_endpoint: str) -> None:  # noqa: F811
    sr, session, bucket, _src = setup
    backup_svc.push(session, "off")
    before = _versions(sr, tmp_path / "before")
    client = raw_client(moto_endpoint)
    listing = client.list_object_versions(Bucket=bucket, Prefix="team/repo/")["Versions"]
    refused = 0
    for v in listing:  # deleting a locked version is refused by the server
        try:
            client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        except client.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDenied"
            refused += 1
    assert refused == len(listing)
    batch = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]}
                                                                     for v in listing]})
    assert len(batch.get("Errors", [])) == len(listing) and not batch.get("Deleted")
    for v in listing:  # garbage over every key, then delete markers on top
        client.put_object(Bucket=bucket, Key=v["Key"], Body=b"garbage " + os.urandom(64))
    for v in listing:
        client.delete_object(Bucket=bucket, Key=v["Key"])
    client.put_object(Bucket=bucket, Key="team/repo/manifest", Body=b"not a manifest")

    run = _cli(cli, s3_env)
    assert run("remote", "list").code == 0
    v = run("backup", "verify", "off")
    assert v.code == 0, v.err + v.out
    assert "skipped a manifest version" in v.err
    r = run("backup", "restore", "off", "--to", str(tmp_path / "restored"))
    assert r.code == 0, r.err
    assert _versions(Strongroom.open(str(tmp_path / "restored"), PASSPHRASE), tmp_path / "after") == before


def test_verify_names_a_destroyed_object(setup, cli: Cli, s3_env: dict[str, str],  # noqa: F811
                                         moto_endpoint: str) -> None:  # noqa: F811
    """GOVERNANCE can be bypassed by an admin (moto has no IAM): the drill must then name what is gone."""
    _sr, session, bucket, _ = setup
    backup_svc.push(session, "off")
    client = raw_client(moto_endpoint)
    packs = [v for v in client.list_object_versions(Bucket=bucket, Prefix="team/repo/data/")["Versions"]]
    victim = max(packs, key=lambda v: v["Size"])
    client.delete_object(Bucket=bucket, Key=victim["Key"], VersionId=victim["VersionId"],
                         BypassGovernanceRetention=True)
    run = _cli(cli, s3_env)
    v = run("backup", "verify", "off")
    assert v.code == 1, v.err
    assert victim["Key"].removeprefix("team/repo/") in v.out
    assert "affected" in v.out


def test_sample_verify_and_backup_list(setup, cli: Cli, s3_env: dict[str, str]) -> None:  # noqa: F811
    _sr, session, _, _ = setup
    backup_svc.push(session, "off")
    run = _cli(cli, s3_env)
    v = run("backup", "verify", "off", "--sample", "1/2")
    assert v.code == 0 and "(sample)" in v.err, v.err
    listed = run("backup", "list", "off")
    assert listed.code == 0 and "\tok" in listed.out


def test_retention_reaches_the_newest_version_that_needs_an_object(setup) -> None:
    """Dedupe horizon: a pack uploaded on day 0 and still needed on day 30 is locked past day 30 + retain."""
    sr, session, bucket, src = setup
    remote = RemoteStore(session.settings.state_dir).get("off")
    s3 = S3Backend(bucket, "team/repo", endpoint_url=remote.endpoint, region="us-east-1")
    repo = session.open()
    t0 = dt.datetime.now(dt.UTC).timestamp()

    first = engine.push(repo, s3, remote, lambda: [], now=t0)
    assert first.extended == 0
    later = t0 + 30 * 86400
    (src / "new.bin").write_bytes(os.urandom(1000))
    sr.commit(str(src), "v2")
    second = engine.push(repo, s3, remote, lambda: [], now=later)
    assert second.extended > 0
    found = engine.find_manifest(s3, engine.accept_for(repo))
    assert found is not None
    horizon = later + remote.retain_days * 86400
    for name, e in found[0].entries.items():
        head = s3.head(name, e.version_id)
        assert head.retain_until is not None and head.retain_until.timestamp() >= horizon - 1, name
        assert e.retain_until >= horizon - 1



def test_retention_above_the_maximum_is_refused(moto_endpoint: str) -> None:  # noqa: F811
    with pytest.raises(InputError, match="above the maximum"):
        Remote("r", "s3://bucket-x/p", moto_endpoint, None, "COMPLIANCE", 400, 365)


def test_incident_halts_push(setup, cli: Cli, s3_env: dict[str, str]) -> None:  # noqa: F811
    _sr, session, _, _ = setup
    run = _cli(cli, s3_env)
    opened = run("incident", "open", "--reason", "mass rename detected")
    assert opened.code == 0
    inc_id = opened.out.split()[-1]
    r = run("backup", "push", "off", "--force")
    assert r.code == 1 and inc_id in r.err and "mass rename" in r.err, r.err
    with pytest.raises(IncidentOpen, match=inc_id):
        backup_svc.push(session, "off")
    assert [i.id for i in backup_svc.incident_list(session)] == [inc_id]
    assert run("incident", "close", inc_id).code == 0
    assert backup_svc.push(session, "off").uploaded > 0
    assert IncidentStore(session.settings.state_dir).open_ones() == []


def test_incident_opened_during_a_push_writes_no_manifest(setup) -> None:
    _sr, session, bucket, _ = setup
    remote = RemoteStore(session.settings.state_dir).get("off")
    s3 = S3Backend(bucket, "team/repo", endpoint_url=remote.endpoint, region="us-east-1")
    calls = {"n": 0}

    def incidents():
        calls["n"] += 1
        return [] if calls["n"] < 3 else [IncidentStore(session.settings.state_dir).open_incident("guard", 1)]

    with pytest.raises(IncidentOpen):
        engine.push(session.open(), s3, remote, incidents, workers=1)
    assert engine.manifest_versions(s3) == []


def test_bad_remotes_exit_2(cli: Cli, s3_env: dict[str, str], make_bucket: MakeBucket,  # noqa: F811
                            moto_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    run = _cli(cli, s3_env)
    plain = make_bucket(lock=False, versioning=False)
    r = run("remote", "add", "a", f"s3://{plain}/x", "--endpoint", moto_endpoint)
    assert r.code == 2 and "versioning is not enabled" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    r = run("backup", "push", "nope")
    assert r.code == 2 and "unknown remote" in r.err

    from strongroom.service.context import Session
    from strongroom.settings import Settings

    session = Session(Settings.from_env())
    versioned = make_bucket(lock=False)
    cases = [
        ((f"s3://{versioned}/x", moto_endpoint, None, "compliance", 3), "Object Lock is not enabled"),
        (("s3://no-such-bucket-here/x", moto_endpoint, None, None, 0), "does not exist"),
        (("s3://key:secret@bucket/x", moto_endpoint, None, None, 0), "no credentials in it"),
        ((f"s3://{plain}/x", moto_endpoint, None, "governance", 900, 365), "above the maximum"),
        ((f"s3://{plain}/x", "http://user:pw@host", None, None, 0), "without credentials"),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=message) as e:
            backup_svc.remote_add(session, "b", *args)  # type: ignore[arg-type]
        assert "secret" not in str(e.value) and "pw" not in str(e.value)
    assert backup_svc.remote_list(session) == []


def test_manifest_round_trip_and_tamper() -> None:
    from strongroom.backup.manifest import Entry
    from strongroom.crypto.signing import Ed25519Signer

    signer = Ed25519Signer.generate("strongroom-test")
    m = Manifest("ab" * 32, 5, {"data/ab/" + "cd" * 32: Entry("ef" * 32, 10, 99, "v1.x_y-z"), "refs":
                                Entry("01" * 32, 3, 0, "null")})
    note = m.sign(signer)
    assert Manifest.verified(note, signer.verifier(), "ab" * 32) == m
    bad = note.replace(b"v1.x_y-z", b"v2.x_y-z")
    with pytest.raises(Exception, match="signature"):
        Manifest.verified(bad, signer.verifier(), "ab" * 32)
    with pytest.raises(Exception, match="another repository"):
        Manifest.verified(note, signer.verifier(), "cd" * 32)
