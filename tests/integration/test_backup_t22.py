"""RELIABILITY T22 at full size: a push interrupted at 20 points by a dropped TCP connection (a proxy cuts it
mid-request), and `strongroom backup push` killed with SIGKILL at 20 points. Each trial uses a fresh
object-locked bucket and interrupts at a different share of the bytes. After every interruption: no
manifest names a missing object, no partial object is visible; the next push completes, re-sending at most
the one cut part, and the backup verifies."""

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
from strongroom.backup import engine
from strongroom.backup.remotes import RemoteStore
from strongroom.service import backup as backup_svc
from tests.conftest import PASSPHRASE, Cli, make_tree
from tests.integration.test_backup_interrupted import PART, _check_bucket, _listing, _s3
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, s3_env  # noqa: F401
from tests.tcpproxy import Proxy

POINTS = 20


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(moto_endpoint)
    yield p
    p.close()


@pytest.fixture
def world(tmp_path: Path, moto_endpoint: str, s3_env: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    rnd = __import__("random").Random(22)
    files = {f"small/{i}.txt": rnd.randbytes(rnd.randint(100, 30_000)) for i in range(6)}
    files["weights.bin"] = rnd.randbytes(12 << 20)  # one pack over the multipart threshold: three parts
    src = make_tree(tmp_path / "src", files)
    sr = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    sr.commit(str(src), "v1")
    return {"sr": sr, "session": sr._session, "moto": moto_endpoint}


def _trial(w: dict[str, Any], make_bucket: MakeBucket, endpoint: str, k: int) -> dict[str, Any]:  # noqa: F811
    """A fresh locked bucket, and a remote ``t<k>`` that reaches it through ``endpoint``."""
    bucket = make_bucket(lock=True)
    name = f"t{k}"
    backup_svc.remote_add(w["session"], name, f"s3://{bucket}/p", endpoint, "us-east-1", "governance", 1)
    remote = RemoteStore(w["session"].settings.state_dir).get(name)
    return dict(w, bucket=bucket, remote=remote, name=name)


def _complete(t: dict[str, Any], proxy: Proxy) -> engine.PushReport:
    repo = t["session"].open()
    report = engine.push(repo, _s3(t, proxy.endpoint), t["remote"], lambda: [], workers=2)
    assert report.manifest_version
    versions = Counter(v["Key"] for v in _listing(t))
    assert max(versions.values()) == 1, versions  # nothing finished was uploaded twice
    _check_bucket(t, PART, PART)
    assert backup_svc.verify(t["session"], t["name"]).ok
    return report


def test_twenty_dropped_connections(world: dict[str, Any], proxy: Proxy, make_bucket: MakeBucket) -> None:  # noqa: F811
    repo = world["session"].open()
    total = sum(size for _, size in repo.backend.list("data"))
    for k in range(POINTS):
        t = _trial(world, make_bucket, proxy.endpoint, k)
        proxy.cuts = 0
        before = proxy.sent
        proxy.cut_after(int(total * (k + 0.5) / POINTS))
        report = _complete(t, proxy)  # botocore retries the one cut request; the push goes on
        assert proxy.cuts == 1, k
        overhead = (proxy.sent - before) - report.bytes_sent  # request headers plus what was sent twice
        assert overhead <= PART + 200_000, (k, overhead)


def test_twenty_sigkills(world: dict[str, Any], cli: Cli, proxy: Proxy, make_bucket: MakeBucket,  # noqa: F811
                         s3_env: dict[str, str]) -> None:  # noqa: F811
    repo = world["session"].open()
    total = sum(size for _, size in repo.backend.list("data"))
    env = dict(cli.env, **s3_env, STRONGROOM_PASSPHRASE=PASSPHRASE)
    killed = 0
    for k in range(POINTS):
        t = _trial(world, make_bucket, proxy.endpoint, k)
        argv = [sys.executable, "-m", "strongroom", "--repo", str(cli.repo), "backup", "push", t["name"],
                "--workers", "1"]  # fmt: skip
        start = proxy.sent
        target = start + int(total * (k + 0.5) / POINTS)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and proxy.sent < target and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(30)
        proxy.settle()  # the killed push's last request has been answered (as after any real crash)
        assert not [v for v in _listing(t) if v["Key"] == "p/manifest"] or proc.returncode == 0, k
        _check_bucket(t, 8 << 20, 16 << 20)  # the CLI's part size and threshold: no partial object
        present = {v["Key"].removeprefix("p/") for v in _listing(t)}
        report = _complete_cli_sized(t, proxy)
        assert report.resumed == len(present), k  # every finished object was kept, none sent again
    assert killed >= POINTS - 2  # a kill can land after the last byte, when the push has just finished


def _complete_cli_sized(t: dict[str, Any], proxy: Proxy) -> engine.PushReport:
    """The next push, with the CLI's part size (so the interrupted multipart upload can be resumed)."""
    from strongroom.backends.s3 import S3Backend

    repo = t["session"].open()
    s3 = S3Backend(t["bucket"], "p", endpoint_url=proxy.endpoint, region="us-east-1")
    report = engine.push(repo, s3, t["remote"], lambda: [])
    assert report.manifest_version
    versions = Counter(v["Key"] for v in _listing(t))
    assert max(versions.values()) == 1, versions
    _check_bucket(t, 8 << 20, 16 << 20)
    assert backup_svc.verify(t["session"], t["name"]).ok
    return report

