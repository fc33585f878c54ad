"""Protection is enforced when the branch moves, not only when the command starts (review, HIGH, MEDIUM): a
commit, workspace commit or revert that began before `branch protect` is refused under the publish lock, and
so is a merge whose branch's protection changed while it ran its checks; each refusal is audited as a denial
like the early one. Deterministic: the protection is changed through the real service call, in another
session (or process), from a point the command passes through between its start and the branch's move."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest

from strongroom import Strongroom
from strongroom.audit.events import Event
from strongroom.errors import PolicyDenied
from strongroom.service import branches
from strongroom.service import merge as merge_svc
from strongroom.service import versions as ver_svc
from strongroom.service import workspace as ws_svc
from strongroom.store import ingest
from tests.conftest import PASSPHRASE, Cli, make_tree

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
    monkeypatch: pytest.MonkeyPatch,
    module: ModuleType,
    name: str,
    admin: Strongroom,
    checks: tuple[str, ...] = (),
    **protection: object,
) -> list[str]:
    """Make ``module.name`` (a step the command takes after its early check) protect main (with ``checks``,
    or ``on=False`` to unprotect it) from the admin's session the first time it is called. Returns the list
    the hook appends to once it has run."""
    original = getattr(module, name)
    ran: list[str] = []

    def hooked(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        if not ran:
            ran.append(name)
            merge_svc.protect(admin._session, "main", list(checks), **protection)  # type: ignore[arg-type]
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


CHANGED = "protection of main changed while merging; retry"


@pytest.mark.parametrize(
    ("fast_forward", "before", "during", "hook", "retry_lands"),
    [
        # tightened while the checks ran: the added check never ran on the merge result
        (False, {"checks": ("true",)}, {"checks": ("true", "false")}, "run_checks", False),
        (True, {"checks": ("true",)}, {"checks": ("true", "false")}, "run_checks", False),
        # --require-signed added while the checks ran: the signatures were never checked (they hold here: the
        # versions are signed by the trusted key `init` made, so the retry lands)
        (False, {"checks": ("true",)}, {"checks": ("true",), "require_signed": True}, "run_checks", True),
        # protected while a merge into an unprotected branch ran: nothing it requires was enforced
        (True, None, {"checks": ("false",)}, "_enforce_signed", False),
        # lifted: the merge enforced rules no longer in force; it is refused too, and a retry lands
        (False, {"checks": ("true",)}, {"on": False}, "run_checks", True),
    ],
)
def test_merge_refused_when_protection_changed_while_it_ran(
    world: tuple[Strongroom, Strongroom, Path],
    tmp_path: Path,
    repo_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_forward: bool,
    before: dict[str, object] | None,
    during: dict[str, object],
    hook: str,
    retry_lands: bool,
) -> None:
    sr, admin, src = world
    s = sr._session
    branches.branch_create(s, "dev")
    dev = make_tree(tmp_path / "dev", {"a": b"1\n", "d/b": b"b\n", "n": b"new on dev\n"})
    sr.commit(str(dev), message="dev work", branch="dev", workers=1)
    if not fast_forward:
        (src / "m").write_bytes(b"new on main\n")
        sr.commit(str(src), message="main work", workers=1)
    if before is not None:
        merge_svc.protect(admin._session, "main", **before)  # type: ignore[arg-type]
    old = head(admin)
    ran = protect_midway(monkeypatch, merge_svc, hook, admin, **during)
    with pytest.raises(PolicyDenied) as e:
        merge_svc.merge(s, "dev", "main")
    assert ran and str(e.value) == CHANGED
    assert head(admin) == old
    assert_denied_last(repo_path, "merge", CHANGED)
    monkeypatch.undo()
    # The retry is judged by the protection in force now.
    if retry_lands:
        done = merge_svc.merge(s, "dev", "main")
        assert done.kind == ("fast-forward" if fast_forward else "merge") and head(admin).hex() == done.version
    else:
        with pytest.raises(PolicyDenied, match="check `false` failed"):
            merge_svc.merge(s, "dev", "main")
        assert head(admin) == old


def test_cli_merge_whose_check_tightens_protection_exits_1(cli: Cli, tmp_path: Path) -> None:
    """Two processes, no sleeping: the merge's own check runs `strongroom branch protect`, which adds a
    failing check before the merge publishes."""
    main = make_tree(tmp_path / "main", {"a": b"base\n"})
    assert cli("init").code == 0
    assert cli("commit", str(main), "-m", "base").code == 0
    assert cli("branch", "create", "dev").code == 0
    dev = make_tree(tmp_path / "dev", {"a": b"base\n", "n": b"new on dev\n"})
    assert cli("commit", str(dev), "-b", "dev", "-m", "dev work").code == 0
    tighten = shlex.join(
        [
            sys.executable,
            "-m",
            "strongroom",
            "--repo",
            str(cli.repo),
            "branch",
            "protect",
            "main",
            "--require-check",
            "false",
        ]
    )
    assert cli("branch", "protect", "main", "--require-check", tighten).code == 0
    before = cli("branch", "list").out
    res = cli("merge", "dev", "--into", "main")
    assert res.code == 1 and CHANGED in res.err, res.out + res.err
    assert cli("branch", "list").out == before
    again = cli("merge", "dev", "--into", "main")
    assert again.code == 1 and "check `false` failed" in again.err, again.out + again.err
    assert cli("branch", "list").out == before
