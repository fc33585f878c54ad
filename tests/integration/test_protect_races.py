"""Protection is enforced when the branch moves, not only when the command starts (review, HIGH): a commit,
workspace commit or revert that began before `branch protect` is refused under the publish lock, and the
refusal is audited as a denial like the early one. Deterministic: the protection is changed through the real
service call, in another session, from a hook the command passes through between the two points."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from strongroom import Strongroom
from strongroom.audit.events import Event
from strongroom.errors import PolicyDenied
from strongroom.service import merge as merge_svc
from strongroom.service import versions as ver_svc
from strongroom.service import workspace as ws_svc
from strongroom.store import ingest
from tests.conftest import PASSPHRASE, make_tree

ONLY_BY_MERGE = "branch main is protected: it takes new versions only by merge"


@pytest.fixture
def world(tmp_path: Path, repo_path: Path) -> tuple[Strongroom, Strongroom, Path]:
    """The writer's repository with one version on main, an admin's second session, and the source folder."""
    sr = Strongroom.init(str(repo_path), PASSPHRASE, user="ann")
    src = make_tree(tmp_path / "src", {"a": b"1\n", "d/b": b"b\n"})
    sr.commit(str(src), message="base", workers=1)
    admin = Strongroom.open(str(repo_path), PASSPHRASE, user="admin")
    return sr, admin, src


def protect_midway(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, admin: Strongroom, **protection: object
) -> list[str]:
    """Make ``module.name`` (a step the command takes after its early check) protect main from the admin's
    session the first time it is called. Returns the list the hook appends to once it has run."""
    original = getattr(module, name)
    ran: list[str] = []

    def hooked(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        if not ran:
            ran.append(name)
            merge_svc.protect(admin._session, "main", [], **protection)  # type: ignore[arg-type]
        return result

    monkeypatch.setattr(module, name, hooked)
    return ran


def head(sr: Strongroom, branch: str = "main") -> bytes:
    return sr._session.open().read_refs().branches[branch]


def events(repo_path: Path) -> list[Event]:
    log = Strongroom.open(str(repo_path), PASSPHRASE)._session.audit_log()
    assert log is not None
    return log.query()


def assert_denied_last(repo_path: Path, action: str, message: str) -> None:
    ev = [e for e in events(repo_path) if e.action == action]
    assert ev[-1].outcome == "denied", ev[-1]
    assert ev[-1].details["error"] == {"class": "PolicyDenied", "message": message}


def test_commit_started_before_protect_is_refused(
    world: tuple[Strongroom, Strongroom, Path], repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr, admin, src = world
    before = head(admin)
    ran = protect_midway(monkeypatch, ingest, "build_tree", admin)
    (src / "a").write_bytes(b"2\n")
    with pytest.raises(PolicyDenied) as e:
        ver_svc.commit(sr._session, str(src), message="started before protect", workers=1)
    assert ran and str(e.value) == ONLY_BY_MERGE
    assert head(admin) == before
    assert_denied_last(repo_path, "commit", ONLY_BY_MERGE)
    # Nothing was left half-done: unprotected, the same commit goes through.
    monkeypatch.undo()
    merge_svc.protect(admin._session, "main", [], on=False)
    assert ver_svc.commit(sr._session, str(src), message="after unprotect", workers=1).parent == before.hex()


def test_workspace_commit_started_before_protect_is_refused(
    world: tuple[Strongroom, Strongroom, Path], tmp_path: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr, admin, _ = world
    ws = tmp_path / "ws"
    ws_svc.create(sr._session, str(ws), "main", None, [])
    before = head(admin)
    ran = protect_midway(monkeypatch, ingest, "build_tree", admin)
    (ws / "a").write_bytes(b"from the workspace\n")
    with pytest.raises(PolicyDenied, match=ONLY_BY_MERGE):
        ws_svc.commit(sr._session, str(ws), "started before protect", None, 0.0)
    assert ran and head(admin) == before
    assert "committing" not in ws_svc.read_meta(str(ws))  # a refusal, not an interrupted commit
    assert_denied_last(repo_path, "commit", ONLY_BY_MERGE)


def test_revert_started_before_protect_is_refused(
    world: tuple[Strongroom, Strongroom, Path], repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr, admin, src = world
    (src / "a").write_bytes(b"mistake\n")
    mistake = sr.commit(str(src), message="mistake", workers=1).id
    before = head(admin)
    ran = protect_midway(monkeypatch, merge_svc, "_merged_tree", admin, require_signed=True)
    with pytest.raises(PolicyDenied) as e:
        merge_svc.revert(sr._session, mistake)
    assert ran and str(e.value) == ONLY_BY_MERGE
    assert head(admin) == before
    assert_denied_last(repo_path, "revert", ONLY_BY_MERGE)
