"""T22, interrupted pushes against a moto S3 server over real HTTP: a connection reset mid-multipart by a TCP
proxy (tests/tcpproxy.py), a server that stays unreachable after the reset, and `strongroom backup push`
killed with SIGKILL at several points. After each: no manifest names a missing object, no partial object is
visible, the next push completes without sending finished objects again, and the backup verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.backends.s3 import S3Backend, expected_etag
from strongroom.backup import engine
from strongroom.backup.remotes import RemoteStore
from strongroom.service import backup as backup_svc
from tests.conftest import PASSPHRASE, Cli, make_tree
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, raw_client, s3_env  # noqa: F401
from tests.tcpproxy import Proxy

PART = 5 << 20  # the smallest part S3 takes


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(moto_endpoint)
    yield p
    p.close()


@pytest.fixture
def big(tmp_path: Path, moto_endpoint: str, make_bucket: MakeBucket, s3_env: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    rnd = __import__("random").Random(7)
    files = {f"small/{i}.txt": rnd.randbytes(rnd.randint(100, 50_000)) for i in range(8)}
    files["weights.bin"] = rnd.randbytes(24 << 20)  # two packs: one of 16 MiB and more, one of about 8 MiB
    src = make_tree(tmp_path / "src", files)
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    sr.commit(str(src), "v1")
    bucket = make_bucket(lock=True)
    session = sr._session
    backup_svc.remote_add(session, "off", f"s3://{bucket}/p", moto_endpoint, "us-east-1", "governance", 1)
    remote = RemoteStore(session.settings.state_dir).get("off")
    return {"sr": sr, "session": session, "bucket": bucket, "remote": remote, "moto": moto_endpoint}


def _s3(w: dict[str, Any], endpoint: str, **kw: Any) -> S3Backend:
    return S3Backend(w["bucket"], "p", endpoint_url=endpoint, region="us-east-1", part_size=PART,
                     multipart_threshold=PART, **kw)


def _listing(w: dict[str, Any]) -> list[dict[str, Any]]:
    out = raw_client(w["moto"]).list_object_versions(Bucket=w["bucket"], Prefix="p/")
    return list(out.get("Versions", []))


def _check_bucket(w: dict[str, Any], part_size: int, threshold: int) -> None:
    """Every visible version is a complete copy of the local object of that name (no partial object), and
    every manifest version that verifies names only versions that exist."""
    repo = w["session"].open()
    for v in _listing(w):
        name = v["Key"].removeprefix("p/")
        if name == "manifest":
            continue
        data = repo.backend.get(name)
        assert v["Size"] == len(data), name
        assert v["ETag"].strip('"') == expected_etag(data, part_size, threshold), name
    s3 = S3Backend(w["bucket"], "p", endpoint_url=w["moto"], region="us-east-1")
    present = {(v["Key"].removeprefix("p/"), v["VersionId"]) for v in _listing(w)}
    accept = engine.accept_for(repo)
    for mv in engine.manifest_versions(s3):
        m = accept(s3.get_version("manifest", mv.version_id))
        assert {(n, e.version_id) for n, e in m.entries.items()} <= present


@pytest.mark.parametrize("fraction", [0.15, 0.45, 0.8])
def test_connection_reset_mid_multipart_resends_at_most_one_part(big: dict[str, Any], proxy: Proxy,
                                                                 fraction: float) -> None:
    repo = big["session"].open()
    total = sum(size for _, size in repo.backend.list("data"))
    proxy.cut_after(int(total * fraction))  # inside a part of a multipart upload, or of a single PUT
    report = engine.push(repo, _s3(big, proxy.endpoint), big["remote"], lambda: [], workers=2)
    assert proxy.cuts == 1 and report.manifest_version
    overhead = proxy.sent - report.bytes_sent  # request headers plus whatever was sent twice
    assert overhead <= PART + 200_000, overhead  # botocore retried the one request that was cut
    _check_bucket(big, PART, PART)
    assert backup_svc.verify(big["session"], "off").ok


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_push_after_an_outage_resumes_without_resending(big: dict[str, Any], proxy: Proxy, fraction: float) -> None:
    repo = big["session"].open()
    total = sum(size for _, size in repo.backend.list("data"))
    proxy.cut_after(int(total * fraction), stay_down=True)
    with pytest.raises(engine.PushInterrupted):
        engine.push(repo, _s3(big, proxy.endpoint, max_attempts=1), big["remote"], lambda: [], workers=2)
    finished = {v["Key"].removeprefix("p/"): v for v in _listing(big)}
    assert finished and "manifest" not in finished  # the manifest is written last
    _check_bucket(big, PART, PART)

    parts_done = _parts(raw_client(big["moto"]), big["bucket"])  # of the upload the outage interrupted
    proxy.up()
    sent_before = proxy.sent
    second = engine.push(repo, _s3(big, proxy.endpoint), big["remote"], lambda: [], list_above=0)  # by listing
    assert second.manifest_version and second.resumed == len(finished)
    assert second.uploaded + second.resumed == second.objects
    resumed_bytes = sum(v["Size"] for v in finished.values())
    assert second.bytes_sent <= second.total_bytes - resumed_bytes + 64_000  # + the manifest
    assert proxy.sent - sent_before <= second.total_bytes - resumed_bytes - parts_done + 300_000
    versions = Counter(v["Key"] for v in _listing(big))
    assert max(versions.values()) == 1, versions  # nothing finished was uploaded twice
    assert backup_svc.verify(big["session"], "off").ok


def _wait(pred: Any, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _parts(client: Any, bucket: str) -> int:
    """Bytes of the parts uploaded so far to incomplete multipart uploads."""
    total = 0
    for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        parts = client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])
        total += sum(p["Size"] for p in parts)
    return total


def test_sigkill_at_several_points_then_push_completes(big: dict[str, Any], cli: Cli, proxy: Proxy,
                                                       s3_env: dict[str, str]) -> None:  # noqa: F811
    client = raw_client(big["moto"])
    env = dict(cli.env, **s3_env, STRONGROOM_PASSPHRASE=PASSPHRASE)
    argv = [sys.executable, "-m", "strongroom", "--repo", str(cli.repo), "backup", "push", "off", "--workers", "1"]
    points = [
        ("first object", lambda: len(_listing(big)) >= 1),
        ("three objects", lambda: len(_listing(big)) >= 3),
        ("mid-multipart, a part uploaded", lambda: _parts(client, big["bucket"]) > 0),
    ]
    killed = 0
    for what, pred in points:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        hit = _wait(pred, proc)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(30)
        proxy.settle()  # the killed push's last request has been answered before anything looks
        assert hit or proc.returncode == 0, (what, proc.stderr.read() if proc.stderr else b"")
        _check_bucket(big, 8 << 20, 16 << 20)
        if proc.returncode == 0:
            break
        assert not [v for v in _listing(big) if v["Key"] == "p/manifest"], what  # no manifest yet
    assert killed == 3
    present = {v["Key"].removeprefix("p/") for v in _listing(big)}
    parts_done = _parts(client, big["bucket"])
    assert parts_done >= 8 << 20  # the last kill left a multipart upload with at least one part
    repo = big["session"].open()
    missing = sum(size for name, size in engine._snapshot(repo.backend)[0].items() if name not in present)
    s3 = S3Backend(big["bucket"], "p", endpoint_url=proxy.endpoint, region="us-east-1")  # 8 MiB parts, as the CLI
    final = engine.push(repo, s3, big["remote"], lambda: [])
    assert final.manifest_version and final.resumed == len(present) > 0
    # only what was missing, less the parts already uploaded, went over the wire (plus headers and manifest)
    assert proxy.sent <= missing - parts_done + 300_000, (proxy.sent, missing, parts_done)
    assert final.bytes_sent <= missing - parts_done + 64_000
    assert not client.list_multipart_uploads(Bucket=big["bucket"]).get("Uploads")  # the resumed one completed
    versions = Counter(v["Key"] for v in _listing(big))
    assert max(versions.values()) == 1, versions
    _check_bucket(big, 8 << 20, 16 << 20)
    assert backup_svc.verify(big["session"], "off").ok
