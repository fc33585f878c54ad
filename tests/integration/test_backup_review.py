"""Backup review fixes, against a moto S3 server over real HTTP: one repository per prefix (push, verify and
prune refuse another repository's prefix; restore and prune get past manifests a repository cannot open),
a damaged local pack is never uploaded and a damaged pack in a backup fails restore, prune of a bucket's
root leaves other prefixes alone, concurrent incident and remote changes are all kept, credentials typed
into locations never reach an error or the audit log, bad input exits 2, and restore with another endpoint
keeps the remote's push profile."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.backends.s3 import S3Backend
from strongroom.backup import engine
from strongroom.backup.manifest import MANIFEST_NAME, Entry, Manifest
from strongroom.backup.remotes import IncidentStore, RemoteStore
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError
from strongroom.service import backup as backup_svc
from tests.conftest import PASSPHRASE, Cli, make_tree
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401
from tests.tcpproxy import Proxy

DAY = 86400
PASS_B = "the other repository's passphrase 9b1e"
PROFILES = {"pusher": "PUSHKEY", "deleter": "DELETEKEY"}


def _rand(n: int, seed: int) -> bytes:
    return __import__("random").Random(seed).randbytes(n)


@pytest.fixture
def w(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    make_bucket: MakeBucket,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """Repository A (committed once), the AWS profiles ``pusher`` and ``deleter`` in the credentials file,
    and A's passphrase as the client's signing passphrase (repository B has another one)."""
    (tmp_path / "signpass").write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("STRONGROOM_SIGNING_PASSPHRASE_FILE", str(tmp_path / "signpass"))
    text = "".join(f"[{p}]\naws_access_key_id = {k}\naws_secret_access_key = secret-{p}\n" for p, k in PROFILES.items())
    Path(s3_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(text)
    src = make_tree(tmp_path / "src", {"a.bin": _rand(700_000, 1), "t/x.csv": b"id,v\n" + b"1,2\n" * 3000})
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    sr.commit(str(src), "v1")
    return {"sr": sr, "session": sr._session, "src": src, "moto": moto_endpoint, "tmp": tmp_path}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "STRONGROOM_SIGNING"))}


def _add_remote(w: dict[str, Any], name: str, url: str, lock: bool = False) -> None:
    backup_svc.remote_add(
        w["session"],
        name,
        url,
        w["moto"],
        "us-east-1",
        "governance" if lock else None,
        1 if lock else 0,
        delete_profile="deleter",
    )


def _s3(w: dict[str, Any], bucket: str, prefix: str) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=w["moto"], region="us-east-1")


def _repo_b(w: dict[str, Any]) -> Strongroom:
    src = make_tree(w["tmp"] / "srcB", {"b.bin": _rand(500_000, 2)})
    sr = Strongroom.init(str(w["tmp"] / "repoB"), PASS_B)
    sr.commit(str(src), "B v1")
    return sr


def _repo_id(sr: Strongroom) -> str:
    return str(sr._session.open().config.repo_id)


def _listing(w: dict[str, Any], bucket: str, prefix: str = "") -> set[tuple[str, str]]:
    out = raw_client(w["moto"]).list_object_versions(Bucket=bucket, Prefix=prefix)
    return {(v["Key"], v["VersionId"]) for v in out.get("Versions", [])}


def _one_line(r: Any) -> bool:
    return len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err + r.out


# ----------------------------------------------------------------------------- 1. one repository per prefix


def test_a_prefix_holds_one_repository(w: dict[str, Any], make_bucket: MakeBucket, cli: Cli) -> None:  # noqa: F811
    bucket = make_bucket(lock=False)
    _add_remote(w, "off", f"s3://{bucket}/shared")
    backup_svc.push(w["session"], "off")
    b = _repo_b(w)
    id_a, id_b = _repo_id(w["sr"]), _repo_id(b)
    before = _listing(w, bucket)
    cli_b = Cli(w["tmp"] / "repoB", cli.env)
    for args in (["backup", "push", "off"], ["backup", "verify", "off"]):
        r = cli_b(*args, passphrase=PASS_B, extra_env=_env())
        assert r.code == 2, (args, r.err)
        assert f"s3://{bucket}/shared holds the backup of repository {id_a[:16]}" in r.err, r.err
        assert id_b[:16] in r.err and "own prefix" in r.err and _one_line(r)
    with pytest.raises(InputError, match="holds the backup of repository"):
        backup_svc.prune(b._session, "off", keep_last=1, now=time.time() + 2 * DAY)
    assert _listing(w, bucket) == before  # B sent nothing and deleted nothing
    r = cli("backup", "restore", "off", "--to", str(w["tmp"] / "restored"), extra_env=_env())
    assert r.code == 0, r.err
    assert _repo_id(Strongroom.open(str(w["tmp"] / "restored"), PASSPHRASE)) == id_a


def _mixed(w: dict[str, Any], make_bucket: MakeBucket, last: str) -> tuple[str, Strongroom, S3Backend]:  # noqa: F811
    """A prefix that an older strongroom let two repositories push to (the engine has no prefix check)."""
    bucket = make_bucket(lock=False)
    _add_remote(w, "off", f"s3://{bucket}/shared")
    b = _repo_b(w)
    remote = RemoteStore(w["session"].settings.state_dir).get("off")
    s3 = _s3(w, bucket, "shared")
    order = [b, w["sr"]] if last == "A" else [w["sr"], b]
    for sr in order:
        engine.push(sr._session.open(), s3, remote, lambda: [])
    return bucket, b, s3


def test_restore_skips_a_manifest_the_passphrase_cannot_open(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    cli: Cli,
) -> None:
    _bucket, b, _s3b = _mixed(w, make_bucket, last="B")  # B's manifest is the newest
    r = cli("backup", "restore", "off", "--to", str(w["tmp"] / "a"), extra_env=_env())
    assert r.code == 0, r.err
    assert "skipped" in r.err and "wrong passphrase" in r.err
    assert _repo_id(Strongroom.open(str(w["tmp"] / "a"), PASSPHRASE)) == _repo_id(w["sr"])
    r = cli("backup", "restore", "off", "--to", str(w["tmp"] / "b"), passphrase=PASS_B, extra_env=_env())
    assert r.code == 0, r.err
    assert _repo_id(Strongroom.open(str(w["tmp"] / "b"), PASS_B)) == _repo_id(b)
    r = cli(
        "backup", "restore", "off", "--to", str(w["tmp"] / "c"), passphrase="neither of the two 77", extra_env=_env()
    )
    assert r.code == 2 and "wrong passphrase" in r.err and _one_line(r), r.err


def test_prune_keeps_backups_it_cannot_open(w: dict[str, Any], make_bucket: MakeBucket) -> None:  # noqa: F811
    bucket, b, s3 = _mixed(w, make_bucket, last="A")  # the prefix's config is A's: A's prune may run
    before = _listing(w, bucket)
    report = backup_svc.prune(w["session"], "off", keep_last=1, now=time.time() + 2 * DAY)
    assert report.deleted == 0 and report.bad_manifests == 1 and report.kept_everything
    assert _listing(w, bucket) == before
    assert engine.verify(s3, engine.accept_for(b._session.open()), Secret(PASS_B.encode())).ok


# ----------------------------------------------------------------------------- 2. content check


def _damage_largest_pack(repo: Path, truncate: bool) -> str:
    pack = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    pack.chmod(0o600)
    data = pack.read_bytes()
    if truncate:
        pack.write_bytes(data[:-4096])
    else:
        mid = len(data) // 2
        pack.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    return str(pack.relative_to(repo))


def test_push_refuses_to_upload_a_damaged_pack(w: dict[str, Any], make_bucket: MakeBucket, cli: Cli) -> None:  # noqa: F811
    bucket = make_bucket(lock=True)
    _add_remote(w, "off", f"s3://{bucket}/r", lock=True)
    assert cli("backup", "push", "off", extra_env=_env()).code == 0
    manifests = engine.manifest_versions(_s3(w, bucket, "r"))
    name = _damage_largest_pack(w["tmp"] / "repo", truncate=True)
    r = cli("backup", "push", "off", extra_env=_env())
    assert r.code == 1, r.err + r.out
    assert name in r.err and "strongroom verify" in r.err and _one_line(r), r.err
    assert engine.manifest_versions(_s3(w, bucket, "r")) == manifests  # no new manifest
    assert [k for k, _ in _listing(w, bucket, f"r/{name}")] == [f"r/{name}"]  # the good copy only
    r = cli("backup", "restore", "off", "--to", str(w["tmp"] / "restored"), extra_env=_env())
    assert r.code == 0, r.err
    assert Strongroom.open(str(w["tmp"] / "restored"), PASSPHRASE).verify("full").ok


def test_restore_fails_on_a_pack_that_does_not_match_its_name(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    cli: Cli,
) -> None:
    """A backup whose manifest names a damaged pack (as an older push uploaded it): restore must not exit 0."""
    bucket = make_bucket(lock=False)
    _add_remote(w, "off", f"s3://{bucket}/r")
    backup_svc.push(w["session"], "off")
    repo = w["session"].open()
    s3 = _s3(w, bucket, "r")
    found = engine.find_manifest(s3, engine.accept_for(repo))
    assert found is not None
    m = found[0]
    name = max((n for n in m.entries if n.startswith("data/")), key=lambda n: m.entries[n].size)
    good = s3.get_version(name, m.entries[name].version_id)
    mid = len(good) // 2
    bad = good[:mid] + bytes([good[mid] ^ 0xFF]) + good[mid + 1 :]
    vid = raw_client(w["moto"]).put_object(Bucket=bucket, Key=f"r/{name}", Body=bad)["VersionId"]
    m.entries[name] = Entry(hashlib.sha256(bad).hexdigest(), len(bad), 0, vid)
    damaged = Manifest(m.repo_id, time.time_ns(), m.entries)
    raw_client(w["moto"]).put_object(Bucket=bucket, Key=f"r/{MANIFEST_NAME}", Body=damaged.sign(repo.log_signer()))
    r = cli("backup", "restore", "off", "--to", str(w["tmp"] / "restored"), extra_env=_env())
    assert r.code == 1, r.err + r.out
    assert name in r.err and "does not match" in r.err and "Traceback" not in r.err, r.err


# ----------------------------------------------------------------------------- 3. prune's scope


def test_prune_of_a_bucket_root_leaves_other_prefixes_alone(w: dict[str, Any], make_bucket: MakeBucket) -> None:  # noqa: F811
    bucket = make_bucket(lock=False)
    _add_remote(w, "team", f"s3://{bucket}/team")
    _add_remote(w, "root", f"s3://{bucket}")
    backup_svc.push(w["session"], "team")
    backup_svc.push(w["session"], "root")
    (w["src"] / "new.bin").write_bytes(_rand(200_000, 3))
    w["sr"].commit(str(w["src"]), "v2")
    backup_svc.push(w["session"], "root")
    team = _listing(w, bucket, "team/")
    report = backup_svc.prune(w["session"], "root", keep_last=1, now=time.time() + 2 * DAY)
    assert report.deleted > 0 and MANIFEST_NAME in report.deleted_names  # the root's own older backup
    assert not [n for n in report.deleted_names if n.startswith("team/")]
    assert _listing(w, bucket, "team/") == team
    assert backup_svc.verify(w["session"], "team").ok and backup_svc.verify(w["session"], "root").ok


# ----------------------------------------------------------------------------- 4. locked state files

_OPENER = """
import json, sys, time
from strongroom.backup.remotes import IncidentStore
store, out = IncidentStore(sys.argv[1]), []
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
for k in range(int(sys.argv[3])):
    inc = store.open_incident(f"alert {k}", time.time_ns())
    closed = k % 2 == 0
    if closed:
        store.close(inc.id, time.time_ns())
    out.append([inc.id, closed])
print(json.dumps(out))
"""

_ADDER = """
import sys, time
from strongroom.backup.remotes import Remote, RemoteStore
store = RemoteStore(sys.argv[1])
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
for k in range(int(sys.argv[3])):
    store.add(Remote(f"{sys.argv[4]}-{k}", "s3://bucket-x/p"))
"""


def _race(script: str, state: Path, per_process: int, processes: int = 4) -> list[str]:
    start = str(time.time() + 1.5)  # every process is up before the first change
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(state), start, str(per_process), f"p{k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def test_concurrent_incident_changes_are_all_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    outs = _race(_OPENER, state, per_process=25)
    made = [tuple(x) for out in outs for x in json.loads(out)]
    store = IncidentStore(str(state))
    assert sorted(i.id for i in store.all()) == sorted(i for i, _ in made)
    assert sorted(i.id for i in store.open_ones()) == sorted(i for i, closed in made if not closed)
    assert (state / "backup" / "incidents.json.lock").stat().st_mode & 0o777 == 0o600
    assert (state / "backup").stat().st_mode & 0o777 == 0o700


def test_concurrent_remote_adds_are_all_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _race(_ADDER, state, per_process=15)
    names = {r.name for r in RemoteStore(str(state)).all()}
    assert names == {f"p{p}-{k}" for p in range(4) for k in range(15)}
    assert (state / "backup" / "remotes.json.lock").stat().st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------------- 5. credentials in locations


def test_credentials_in_restore_locations_never_reach_errors_or_the_audit(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    cli: Cli,
) -> None:
    bucket = make_bucket(lock=False)
    host = w["moto"].removeprefix("http://")
    cases = [
        (f"s3://{bucket}/none", f"http://AKIAEXAMPLE:hunter2@{host}"),
        (f"s3://AKIAEXAMPLE:TopSecret99@{bucket}/team/repo", w["moto"]),
        ("AKIAEXAMPLE:TopSecret99@off", w["moto"]),
    ]
    for k, (source, endpoint) in enumerate(cases):
        r = cli("backup", "restore", source, "--endpoint", endpoint, "--to", str(w["tmp"] / f"x{k}"), extra_env=_env())
        assert r.code == 2, (source, r.err)
        assert _one_line(r) and "credentials" in r.err, r.err
        assert not [s for s in ("AKIAEXAMPLE", "hunter2", "TopSecret99") if s in r.err + r.out], r.err
    log = cli("--json", "audit", "log")
    assert log.code == 0, log.err
    events = [e for e in json.loads(log.out) if e["action"] == "backup.restore"]
    assert events and not [e for e in events if "hunter2" in json.dumps(e) or "TopSecret99" in json.dumps(e)]
    assert f"s3://{bucket}/team/repo" in [e["details"].get("source") for e in events]  # recorded, redacted
    s3 = S3Backend(bucket, "p", endpoint_url="http://AKIAEXAMPLE:hunter2@[::1]:9000")
    assert "hunter2" not in s3.describe() + repr(s3) and "AKIAEXAMPLE" not in s3.describe() + repr(s3)
    assert s3.describe() == f"s3://{bucket}/p at http://[::1]:9000"


# ----------------------------------------------------------------------------- 6. bad input exits 2


def test_bad_restore_and_retention_input_exit_2(w: dict[str, Any], make_bucket: MakeBucket, cli: Cli) -> None:  # noqa: F811
    bucket = make_bucket(lock=True)
    _add_remote(w, "off", f"s3://{bucket}/r", lock=True)
    backup_svc.push(w["session"], "off")
    env = _env()
    for endpoint in ("notaurl", "ftp://127.0.0.1:9", "http://", "http://127.0.0.1:99999", "http://127.0.0.1:9 "):
        r = cli(
            "backup", "restore", f"s3://{bucket}/r", "--endpoint", endpoint, "--to", str(w["tmp"] / "y"), extra_env=env
        )
        assert r.code == 2 and "--endpoint" in r.err and _one_line(r), (endpoint, r.err)
        r = cli("remote", "add", "bad", f"s3://{bucket}/b", "--endpoint", endpoint, extra_env=env)
        assert r.code == 2 and "--endpoint" in r.err and _one_line(r), (endpoint, r.err)
    r = cli("backup", "restore", "off", "--to", "/dev/null/x", extra_env=env)
    assert r.code == 2 and "/dev/null/x" in r.err and _one_line(r), r.err
    for flags in (
        ["--retain-days", "3000000", "--max-retain-days", "3000000"],
        ["--retain-days", "5", "--max-retain-days", "40000"],
    ):
        r = cli(
            "remote",
            "add",
            "far",
            f"s3://{bucket}/far",
            "--endpoint",
            w["moto"],
            "--lock",
            "governance",
            *flags,
            extra_env=env,
        )
        assert r.code == 2 and "36500" in r.err and _one_line(r), (flags, r.err)
    assert "far" not in {x.name for x in backup_svc.remote_list(w["session"])}
    r = cli("backup", "release", "off", "main", "--retain-days", "3000000", extra_env=env)
    assert r.code == 2 and "above the maximum" in r.err and _one_line(r), r.err


# ----------------------------------------------------------------------------- 7. the push profile on restore


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(moto_endpoint)
    yield p
    p.close()


def test_restore_with_another_endpoint_keeps_the_push_profile(
    w: dict[str, Any],
    make_bucket: MakeBucket,  # noqa: F811
    proxy: Proxy,
    cli: Cli,
) -> None:
    bucket = make_bucket(lock=False)
    backup_svc.remote_add(w["session"], "off", f"s3://{bucket}/r", w["moto"], "us-east-1", push_profile="pusher")
    backup_svc.push(w["session"], "off")
    start = len(proxy.requests)
    r = cli("backup", "restore", "off", "--endpoint", proxy.endpoint, "--to", str(w["tmp"] / "r"), extra_env=_env())
    assert r.code == 0, r.err
    keys = {q.access_key for q in proxy.requests[start:]}
    assert keys == {"PUSHKEY"}, keys  # never the environment's default credential
