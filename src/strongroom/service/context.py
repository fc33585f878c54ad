"""The session a command runs in: settings, the passphrase source, progress, and the opened repository.

Every use case in service/ takes a Session; the CLI and the library API (and later the HTTP service)
build one and call the same functions.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import shlex
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

from strongroom.audit.events import Event, scrub, utc_now
from strongroom.backends.local import LocalBackend
from strongroom.crypto import hsm, kdf
from strongroom.crypto.kdf import STRONG, UNSAFE_TEST_ONLY, KdfParams
from strongroom.crypto.keyslot import Credentials
from strongroom.crypto.secret import Secret
from strongroom.errors import (
    CatalogError,
    InputError,
    KeyUnavailable,
    PolicyDenied,
    StrongroomError,
)
from strongroom.settings import Settings
from strongroom.store import filecache, index, process
from strongroom.store.clientstate import ClientState, PinnedLog, PinnedSigners
from strongroom.store.process import ProcessMark
from strongroom.store.refs import Refs
from strongroom.store.repository import Repository, missing_config
from strongroom.store.scopes import load_scopes

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog


def _import_audit_log() -> None:
    import strongroom.audit.log  # noqa: F401  (SQLAlchemy: about 0.2 s, needed only to record the event)


def keep_warm() -> None:
    """For a long-lived process (the agent): keep each passphrase-derived key, so that the same passphrase
    presented again skips Argon2 (crypto.kdf says how they are kept), and keep what was parsed of index files
    and file caches, reused only while their bytes hash the same."""
    kdf.remember_derived_keys()
    index.keep_parsed_files()
    filecache.keep_loaded()


def between_commands() -> None:
    """For a long-lived process (the agent), after each command: forget what was cached from that command's
    environment (the S3 backend's sessions hold the credentials it resolved)."""
    import sys

    s3 = sys.modules.get("strongroom.backends.s3")  # imported only if a command used S3 (boto3 is heavy)
    if s3 is not None:
        s3.forget_sessions()


class ProgressSink(Protocol):
    def start(self, label: str, files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, label: str, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


PassphrasePrompt = Callable[[str, bool], str]  # (what is asked, ask twice)


@dataclass
class AuditRecord:
    """The event a use case is building: it adds targets and details as it learns them."""

    action: str
    targets: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"

    def target(self, **values: Any) -> None:
        self.targets.update({k: v for k, v in values.items() if v is not None})

    def detail(self, **values: Any) -> None:
        self.details.update(values)

    def fail(self, reason: str) -> None:
        """Record a failure that the use case reports as a result rather than raising."""
        self.outcome = "failed"
        self.details["error"] = reason


@dataclass
class Session:
    settings: Settings
    progress: ProgressSink = field(default_factory=NoProgress)
    prompt: PassphrasePrompt | None = None
    passphrase: Secret | None = None
    _opened: Repository | None = None
    _pins: dict[str, Secret] = field(default_factory=dict, repr=False)
    _signing_passphrase: Secret | None = field(default=None, repr=False)
    _audit_log: AuditLog | None = None
    _audit_log_checked: str | None = None  # the log id found to match this client's pin
    _audit_stack: list[AuditRecord] = field(default_factory=list)
    _audit_pending: bool = False
    _audit_begun: str | None = None  # the pending event of the running outermost command (AuditLog.begin)

    def __post_init__(self) -> None:
        hsm.approve(self.settings.pkcs11_modules)
        hsm.approve(_remembered_modules(self.settings.pkcs11_modules_file))
        if self.settings.catalog:  # refused before any work: `init` would create a repository it cannot record
            from strongroom.catalog.db import check_url

            check_url(self.settings.catalog)

    # ------------------------------------------------------------------ identity

    def user(self, repo: Repository | None = None) -> str:
        """Who acts: STRONGROOM_USER, else the repository config's user, else the OS user."""
        return self.settings.user or (repo.config.user if repo else "") or self.settings.os_user

    def actor(self, repo: Repository | None = None) -> str:
        return f"{self.user(repo)}@{socket.gethostname()}"

    # ------------------------------------------------------------------ passphrase

    def get_passphrase(self, confirm: bool = False) -> Secret:
        if self.passphrase is None:
            s = self.settings
            self.passphrase = self._secret(
                "passphrase",
                confirm,
                file=s.passphrase_file,
                env=s.passphrase_env,
                command=s.passphrase_command,
                sources="STRONGROOM_PASSPHRASE_FILE, --passphrase-command or STRONGROOM_PASSPHRASE",
            )
        return self.passphrase

    def get_new_passphrase(self) -> Secret:
        s = self.settings
        return self._secret(
            "new passphrase",
            True,
            file=s.new_passphrase_file,
            env=s.new_passphrase_env,
            sources="STRONGROOM_NEW_PASSPHRASE_FILE or STRONGROOM_NEW_PASSPHRASE",
        )

    def get_signing_passphrase(self, confirm: bool = False) -> Secret:
        """The passphrase of the user's signing key: its own source when one is configured, else the
        repository passphrase source (docs/signing.md)."""
        s = self.settings
        if s.signing_passphrase_file is None and s.signing_passphrase_env is None:
            try:
                return self.get_passphrase(confirm)
            except KeyUnavailable:
                # No repository passphrase source either (a repository locked by a key file or a token): name
                # the secret that is missing and what it is for.
                raise KeyUnavailable(
                    "no signing passphrase (it encrypts your signing key; when not set apart it is the repository "
                    "passphrase): run on a terminal, or set STRONGROOM_SIGNING_PASSPHRASE_FILE or "
                    "STRONGROOM_SIGNING_PASSPHRASE (or the repository's: STRONGROOM_PASSPHRASE_FILE, "
                    "--passphrase-command or STRONGROOM_PASSPHRASE)"
                ) from None
        if self._signing_passphrase is None:
            self._signing_passphrase = self._secret(
                "signing passphrase",
                confirm,
                file=s.signing_passphrase_file,
                env=s.signing_passphrase_env,
                sources="STRONGROOM_SIGNING_PASSPHRASE_FILE or STRONGROOM_SIGNING_PASSPHRASE",
            )
        return self._signing_passphrase

    def approve_pkcs11_module(self, module: str) -> None:
        """A module the user named with --pkcs11-module: loadable now, and remembered in their configuration
        so that later commands on this machine load it too (a key slot's own record never approves one)."""
        hsm.approve([module])
        path = self.settings.pkcs11_modules_file
        known = _remembered_modules(path)
        real = os.path.realpath(module)
        if real in known:
            return
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write("".join(f"{m}\n" for m in [*known, real]))
        os.replace(tmp, path)

    def get_pin(self, token: str) -> Secret:
        if token not in self._pins:
            self._pins[token] = self._secret(
                f"PIN for token {token}", False, env=self.settings.pkcs11_pin, sources="STRONGROOM_PKCS11_PIN"
            )
        return self._pins[token]

    def _secret(
        self,
        label: str,
        confirm: bool,
        *,
        file: str | None = None,
        env: str | None = None,
        command: str | None = None,
        sources: str,
    ) -> Secret:
        """A secret from a command, a file, the environment or a prompt on the terminal, in that order."""
        text: str | None = None
        if command:
            try:
                out = subprocess.run(shlex.split(command), capture_output=True, check=True, timeout=60)
            except (OSError, subprocess.SubprocessError, ValueError):
                raise InputError("--passphrase-command failed") from None
            text = out.stdout.decode("utf-8", "surrogateescape").rstrip("\r\n")
        elif file:
            try:
                with open(file, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.readline().rstrip("\r\n")
            except OSError as e:
                raise InputError(f"cannot read the {label} file: {e.strerror}") from None
        elif env is not None:
            text = env
        elif self.prompt is not None and self.settings.interactive:
            text = self.prompt(label, confirm)
        if text is None:
            raise KeyUnavailable(f"no {label}: run on a terminal, or set {sources}")
        if not text:
            raise InputError(f"the {label} is empty")
        return Secret(text.encode("utf-8", "surrogateescape"))

    def kdf_params(self) -> KdfParams:
        """Argon2 parameters for a new passphrase KEK (weak only under the test suite's switch)."""
        return UNSAFE_TEST_ONLY if self.settings.unsafe_weak_kdf else STRONG

    def credentials(self, confirm: bool = False) -> Credentials:
        """What opens (or, at init, creates) the repository's KEKs: this session's secrets."""
        return SessionCredentials(self, confirm, new=False)

    def new_credentials(self) -> Credentials:
        """Secrets for a new key slot: the new passphrase, the same PIN source."""
        return SessionCredentials(self, True, new=True)

    # ------------------------------------------------------------------ repository

    def repo_path(self) -> str:
        if not self.settings.repo:
            raise InputError("no repository: give --repo PATH or set STRONGROOM_REPO")
        return self.settings.repo

    def backend(self) -> LocalBackend:
        return LocalBackend(self.repo_path())

    def client_state(self, repo: Repository) -> ClientState:
        return ClientState(self.settings.state_dir, repo.config.repo_id)

    def pinned_signers(self, repo: Repository) -> PinnedSigners:
        return PinnedSigners(self.settings.state_dir, repo.config.repo_id)

    def open(self, check_rollback: bool = True, check_audit_log: bool = True) -> Repository:
        """Open the repository, unlock its keys and refuse it when it was rolled back or swapped, or when
        the catalog no longer holds the audit log this client sealed into it."""
        if self._opened is not None:
            return self._opened
        path = self.repo_path()
        if not os.path.isfile(os.path.join(path, "config")):
            raise missing_config(self.backend())
        with kdf.meanwhile(_import_audit_log):  # imported while Argon2 runs in C on another thread
            repo = Repository.open(self.backend(), self.credentials())
        if check_rollback:
            refs = repo.read_refs()
            state = self.client_state(repo)
            state.check(repo.fingerprint, repo.config.suite, refs)
            state.save(repo.fingerprint, repo.config.suite, refs)
            repo.signers_guard = self.pinned_signers(repo).check_and_save
            if check_audit_log:
                self._check_audit_log_before_work(repo)
        load_scopes(repo, self.settings.keystore)
        self._opened = repo
        return repo

    def adopt(self, repo: Repository) -> None:
        """Use a repository this session has just created as its opened one."""
        repo.signers_guard = self.pinned_signers(repo).check_and_save
        self._opened = repo

    def remember(self, repo: Repository, refs: Refs) -> None:
        self.client_state(repo).save(repo.fingerprint, repo.config.suite, refs)

    def file_cache_path(self, repo: Repository, source: str) -> str:
        tag = repo.hasher(os.path.abspath(source).encode("utf-8", "surrogateescape")).hex()[:32]
        return os.path.join(self.settings.cache_dir, repo.config.repo_id, f"files-{tag}")

    def pack_memo_path(self, repo: Repository) -> str:
        """Which of this repository's data folders a commit need not list (by its location: a copy of the
        repository elsewhere has folders of its own)."""
        where = os.path.abspath(self.settings.repo or "").encode("utf-8", "surrogateescape")
        return os.path.join(self.settings.cache_dir, repo.config.repo_id, f"packs-{repo.hasher(where).hex()[:32]}")

    # ------------------------------------------------------------------ audit

    def _peek_repo_id(self) -> str | None:
        """The repository id from the plaintext config, to find the catalog when the repository could not be
        opened (a wrong passphrase is worth recording too). Unauthenticated: it only picks a catalog."""
        if self._opened is not None:
            return self._opened.config.repo_id
        if not self.settings.repo:
            return None
        try:
            with open(os.path.join(self.settings.repo, "config"), "rb") as f:
                repo_id = str(json.loads(f.read(65536))["id"])
            bytes.fromhex(repo_id)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return repo_id if len(repo_id) == 64 else None

    def audit_log(self, check_pin: bool = True) -> AuditLog | None:
        """The catalog's log for this session's repository (None when there is no repository to name it).
        Refused (AuditLogReplaced) when this client sealed another log into that catalog, unless
        ``check_pin`` is off for the commands that repair or accept that (`audit rebuild`, `trust-current`)."""
        repo_id = self._peek_repo_id()
        if repo_id is None:
            return None
        if self._audit_log is None or self._audit_log.repo_id != repo_id:
            from strongroom.audit.log import AuditLog

            self._audit_log = AuditLog.open(self.settings.catalog_url(repo_id), repo_id)
        if check_pin and self._audit_log_checked != self._audit_log.log_id:
            self.pinned_log(repo_id).check(self._audit_log.log_id)
            self._audit_log_checked = self._audit_log.log_id
        return self._audit_log

    def pinned_log(self, repo_id: str) -> PinnedLog:
        from strongroom.catalog.db import masked_url  # loaded with the catalog, by then

        return PinnedLog(self.settings.state_dir, repo_id, masked_url(self.settings.catalog_url(repo_id)))

    def pin_audit_log(self, force: bool = False, sealed: int | None = None) -> None:
        """Remember the catalog's current log as the one this client seals into, and its sealed size
        (``sealed``, else the catalog's newest checkpoint's), which goes down only when ``force``d
        (`trust-current`)."""
        log = self.audit_log(check_pin=False)
        if log is not None:
            size = log.sealed_size() if sealed is None else sealed
            self.pinned_log(log.repo_id).save(log.log_id, size, force=force)
            self._audit_log_checked = log.log_id

    def _check_audit_log_before_work(self, repo: Repository) -> None:
        """Refuse a replaced catalog before the command does anything, so that no operation goes
        unrecorded, and record the command's event as pending (``_begin``). A catalog that cannot be opened
        is reported when the event is recorded, as before."""
        try:
            log = self.audit_log()
        except CatalogError:
            return
        if log is not None:
            self._begin(log, repo)
            log.close()  # no open database connection is carried into forked workers

    def _begin(self, log: AuditLog, repo: Repository) -> None:
        """Record the running command's event as pending before it changes or reads anything, so that a
        later command records it should this process end first (kill -9, power loss). The process holds a
        file locked meanwhile (state folder, ``running/``): the kernel releases it when the process dies,
        which tells a later command so even from another PID namespace."""
        if not self._audit_stack or self._audit_begun is not None:
            return
        pending_id = os.urandom(16).hex()
        held = self._held_path(pending_id)
        mark = ProcessMark.current(held if process.hold(held) else "")
        self._audit_begun = pending_id  # before the row exists: an interruption from here on still settles it
        try:
            ended = log.begin(pending_id, self._pending_event(log.repo_id, repo), mark)
        except StrongroomError:
            self._audit_begun = None
            process.release(held)
            return  # reported when the command's own event cannot be recorded either
        self._audit_pending = self._audit_pending or ended > 0

    def _held_path(self, pending_id: str) -> str:
        """The file a command keeps locked while it runs (``_begin``)."""
        return os.path.join(self.settings.state_dir, "running", pending_id)

    def _pending_event(self, repo_id: str, repo: Repository | None) -> Event:
        """The running command's event as it stands: the outermost use case's, with what the use cases it
        runs (a workspace commit runs a commit) have noted so far."""
        event = self._event(self._audit_stack[0], repo_id, repo)
        inner = [{"action": r.action, "targets": scrub(r.targets)} for r in self._audit_stack[1:] if r.targets]
        if inner:
            event.details["inner"] = inner
        return event

    @contextlib.contextmanager
    def audited(self, action: str, **targets: Any) -> Iterator[AuditRecord]:
        """Run a use case as one audit event: ok, denied (PolicyDenied) or failed (any other error, with
        its class and message). The outermost block of a command then seals the log (segments and a
        signed checkpoint). A failing command keeps its own error; an audit failure after a successful
        command is raised (fail closed: an operation that cannot be recorded is reported)."""
        rec = AuditRecord(action, {k: v for k, v in targets.items() if v is not None})
        self._audit_stack.append(rec)
        error: BaseException | None = None
        try:
            if self._opened is not None and len(self._audit_stack) == 1 and action not in ACCEPTING_A_LOG:
                self._check_audit_log_before_work(self._opened)  # a session running several commands opens once
            yield rec
        except PolicyDenied as e:
            rec.outcome, error = "denied", e
            rec.details["error"] = {"class": type(e).__name__, "message": str(e)}
            raise
        except BaseException as e:
            rec.outcome, error = "failed", e
            rec.details["error"] = {"class": type(e).__name__, "message": str(e)[:500]}
            raise
        finally:
            self._audit_stack.pop()
            try:
                self._record(rec)
                if not self._audit_stack:
                    self.seal_audit()
            except StrongroomError as e:
                if error is None and isinstance(e, CatalogError):
                    # Done, not undone: say so, or the user repeats it (a second version, a second push).
                    raise CatalogError(f"{rec.action} completed, but its audit event could not be recorded: {e}") from e
                if error is None:
                    raise

    def audit_note(self, **targets: Any) -> None:
        """Add targets (a resolved version id, paths) to the event of the innermost running use case, and to
        the command's pending event (about to read a version, or done changing one)."""
        if not self._audit_stack:
            return
        rec = self._audit_stack[-1]
        before = dict(rec.targets)
        rec.target(**targets)
        log = self._audit_log
        if self._audit_begun is not None and log is not None and rec.targets != before:
            with contextlib.suppress(CatalogError):  # the command's own event still records what it did
                log.update_pending(self._audit_begun, self._pending_event(log.repo_id, self._opened))

    def audit_detail(self, **details: Any) -> None:
        if self._audit_stack:
            self._audit_stack[-1].detail(**details)

    def _record(self, rec: AuditRecord) -> None:
        settles = None
        if not self._audit_stack:  # the outermost command's event replaces its pending one
            settles, self._audit_begun = self._audit_begun, None
        try:
            log = self.audit_log()
            if log is None:
                return
            event = self._event(rec, log.repo_id, self._opened)
            try:
                log.append([event], settles=settles)
            except BaseException:
                if settles is not None:  # left pending: a later command records it once this process ends
                    event.details["finished"] = event.outcome
                    with contextlib.suppress(Exception):
                        log.update_pending(settles, event)
                raise
            self._audit_pending = True
        finally:
            if settles is not None:
                process.release(self._held_path(settles))

    def _event(self, rec: AuditRecord, repo_id: str, repo: Repository | None) -> Event:
        targets = dict(rec.targets)
        targets.setdefault("repository", repo_id)
        user = self.settings.user or (repo.config.user if repo else "") or self.settings.os_user
        return Event(
            seq=0,
            time=utc_now(),
            # escaped like the targets (settings refuse an undecodable STRONGROOM_USER; a repository's
            # configured user, $USER or the host name may still hold bytes that are not UTF-8)
            actor=scrub(user),
            os_user=scrub(self.settings.os_user),
            host=scrub(socket.gethostname()),
            action=rec.action,
            targets=scrub(targets),
            outcome=rec.outcome,
            details=scrub(rec.details),
        )

    def seal_audit(self) -> None:
        """Seal pending events into the repository and sign a checkpoint (needs the opened repository)."""
        if not self._audit_pending or self._opened is None or self._audit_log is None:
            return
        floor = self.pinned_log(self._audit_log.repo_id).sealed(self._audit_log.log_id)
        if (sealed := self._audit_log.seal(self._opened, floor)) is not None:
            self.pin_audit_log(sealed=sealed.size)
        self._audit_pending = False


TARGET_KEYS = frozenset({"branch", "version", "paths", "tag"})
# commands that repair or accept the catalog's log: they open the repository without the pin's check
ACCEPTING_A_LOG = frozenset({"trust-current", "audit.rebuild"})
P = ParamSpec("P")
R = TypeVar("R")


def _remembered_modules(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


class SessionCredentials:
    """The Credentials a session offers: asked for only when a key slot needs them."""

    def __init__(self, session: Session, confirm: bool, new: bool) -> None:
        self._session = session
        self._confirm = confirm
        self._new = new
        self._new_passphrase: Secret | None = None

    def __repr__(self) -> str:
        return "<SessionCredentials>"

    def passphrase(self) -> Secret:
        if not self._new:
            return self._session.get_passphrase(self._confirm)
        if self._new_passphrase is None:
            self._new_passphrase = self._session.get_new_passphrase()
        return self._new_passphrase

    def pin(self, token: str) -> Secret:
        return self._session.get_pin(token)

    def keyfile_path(self, recorded: str) -> str:
        # STRONGROOM_KEYFILE says where an existing slot's key file is now. A new slot's key file is the one
        # its request named (and recorded): the override would prove the new layer against another key.
        if self._new:
            return recorded
        return self._session.settings.keyfile or recorded


def audited(action: str, **params: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a use case ``fn(session, ...)`` so that each call is one audit event (Session.audited).

    ``params`` maps event keys to the use case's parameter names: ``branch``, ``version``, ``tag`` and
    ``paths`` (a string or a list) become targets, any other key a detail. Generators (``cat``) record
    their event when the consumer finishes or stops reading.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(fn)

        def event_args(args: Any, kwargs: Any) -> tuple[Session, dict[str, Any], dict[str, Any]]:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            session = bound.arguments[next(iter(sig.parameters))]
            targets: dict[str, Any] = {}
            details: dict[str, Any] = {}
            for key, name in params.items():
                value = bound.arguments.get(name)
                if value is None or value == [] or value == "":
                    continue
                if key == "paths":
                    value = [value] if isinstance(value, str) else [str(v) for v in value]
                elif isinstance(value, bytes):
                    value = value.hex()
                (targets if key in TARGET_KEYS else details)[key] = value
            return session, targets, details

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                session, targets, details = event_args(args, kwargs)
                with session.audited(action, **targets) as rec:
                    rec.detail(**details)
                    yield from cast(Any, fn)(*args, **kwargs)

            return cast(Callable[P, R], gen_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            session, targets, details = event_args(args, kwargs)
            with session.audited(action, **targets) as rec:
                rec.detail(**details)
                return fn(*args, **kwargs)

        return wrapper

    return decorate
