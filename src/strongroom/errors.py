"""The one error tree of strongroom.

    StrongroomError                      exit 3, HTTP 500 (a bug unless a subclass says otherwise)
    ├── InputError                       exit 2, HTTP 400  bad usage or bad input; nothing was changed
    │   ├── NotARepository
    │   ├── RepositoryExists
    │   ├── WrongPassphrase
    │   ├── WrongPin                     the PKCS#11 token refused the PIN
    │   ├── HsmError                     missing module, token or key; an extractable key; a token failure
    │   ├── KeyUnavailable               no key slot can be opened with the credentials at hand
    │   ├── UnknownVersion               HTTP 404
    │   ├── UnknownPath                  HTTP 404
    │   ├── DestinationNotEmpty
    │   ├── UnreadableSource
    │   ├── UnsafeSwitchRefused
    │   └── UndecodableText              text that is not UTF-8 where it is recorded or compared
    └── ProblemFound                     exit 1, HTTP 409  the command ran and found a problem
        ├── IntegrityError               HTTP 422  damaged or tampered data
        │   ├── DecryptionFailed         (opaque on purpose: never says why)
        │   ├── RollbackDetected
        │   │   └── AuditLogReplaced     the catalog holds another log than the one this client sealed into it
        │   └── AuditLogTampered         the audit log does not match its checkpoints; names the first bad seq
        │       └── AuditLogTruncated    it ends before where this client sealed it, in catalog and repository
        ├── Shredded                     the data was sealed under a scope key that was destroyed
        ├── BranchMoved
        ├── RepositoryLocked
        ├── VerificationFailed           HTTP 422
        ├── PolicyDenied                 HTTP 403  a protected branch, a failed check
        │   └── CheckFailed              a branch's check refused a merge (its output is shown, not logged)
        ├── MergeConflict
        ├── CatalogError                 HTTP 503  the catalog database cannot be used
        └── CannotWrite                  HTTP 507  the machine refused a write: no space left, a quota, an I/O error

strongroom.backends.base adds BackendError, TransientBackendError and BackendAccessDenied (under
StrongroomError, but exit 1 and HTTP 503: the storage failed, which is no bug) and ObjectMissing (under
IntegrityError); strongroom.backup adds UnknownRemote and
RemoteUnusable (InputError), IncidentOpen, PushInterrupted and NoBackup (ProblemFound).
docs/errors.md is generated from this tree by scripts/errorlist.py.

Each class carries its message template in ``template``; ``hint()`` adds detail for humans.
A library never calls ``sys.exit``: the shells map these to exit codes in one place.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: every command, and the agent's client, import this module
if TYPE_CHECKING:
    from typing import Any, ClassVar


class StrongroomError(Exception):
    """internal error: {}"""

    exit_code: ClassVar[int] = 3
    http_status: ClassVar[int] = 500
    template: ClassVar[str] = "internal error: {}"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.args_ = args

    def __str__(self) -> str:
        try:
            return self.template.format(*self.args_)
        except (IndexError, KeyError):
            return self.template.replace("{}", "").strip() + " " + " ".join(map(str, self.args_))

    def hint(self) -> str | None:
        return None


class InputError(StrongroomError):
    exit_code = 2
    http_status = 400
    template = "{}"


class NotARepository(InputError):
    template = "not a strongroom repository: {}"


class RepositoryExists(InputError):
    template = "refusing to initialise: {} exists and is not empty"


class WrongPassphrase(InputError):
    template = "wrong passphrase"


class WrongPin(InputError):
    template = "wrong PIN for PKCS#11 token {!r}"


class HsmError(InputError):
    template = "{}"


class KeyUnavailable(InputError):
    template = "{}"


class UnknownVersion(InputError):
    http_status = 404
    template = "unknown version: {}"


class UnknownPath(InputError):
    http_status = 404
    template = "no such path in version {}: {}"


class DestinationNotEmpty(InputError):
    template = "destination is not empty: {}"


class UnreadableSource(InputError):
    template = "cannot read {}: {}"


class UnsafeSwitchRefused(InputError):
    template = "{}"


class UndecodableText(InputError):
    """Bytes that are not UTF-8 (in an argument, the environment) reach Python as surrogate escapes, which
    SQLite, JSON and a UTF-8 terminal refuse: refused where such text would be recorded or compared."""

    template = "{} is not UTF-8 text: {}"

    @classmethod
    def check(cls, value: str, what: str) -> str:
        """``value`` when it is UTF-8 text; else this error naming ``what``, its bytes shown escaped (\\xe9)."""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = "".join(_escaped(c) for c in value[:80]) + ("…" if len(value) > 80 else "")
            raise cls(what, shown) from None
        return value


def _escaped(c: str) -> str:
    """An undecodable byte (surrogate escape U+DC80..U+DCFF) as \\xNN, another lone surrogate as \\uNNNN."""
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:
        return f"\\x{n - 0xDC00:02x}"
    return f"\\u{n:04x}" if 0xD800 <= n <= 0xDFFF else c


class ProblemFound(StrongroomError):
    exit_code = 1
    http_status = 409
    template = "{}"


class IntegrityError(ProblemFound):
    http_status = 422
    template = "integrity error: {}"


class DecryptionFailed(IntegrityError):
    template = "decryption failed: {}"


class RollbackDetected(IntegrityError):
    template = "{}"

    def hint(self) -> str | None:
        return "if this change is expected, confirm it with `strongroom trust-current`"


class AuditLogReplaced(RollbackDetected):
    def hint(self) -> str | None:
        return (
            "`strongroom audit rebuild` puts the sealed log back from the repository; if the new log is "
            "expected, accept it with `strongroom trust-current`"
        )


class AuditLogTampered(IntegrityError):
    template = "audit log tampered: first bad sequence number {}: {}"

    def hint(self) -> str | None:
        return "`strongroom audit rebuild` recreates the catalog from the repository's sealed segments"


class AuditLogTruncated(AuditLogTampered):
    """The log ends before where this client sealed it, in the catalog and the repository alike."""

    def hint(self) -> str | None:
        return (
            "the repository lost the events too, so `strongroom audit rebuild` cannot bring them back (a backup "
            "bucket or an exported checkpoint may hold them); accept the shorter log with `strongroom trust-current`"
        )


class Shredded(ProblemFound):
    template = "shredded: the data of scope {!r} was erased for good (its key was destroyed)"


class BranchMoved(ProblemFound):
    template = "branch moved; retry"


class RepositoryLocked(ProblemFound):
    template = "repository is locked by {}"

    def hint(self) -> str | None:
        return "wait with --wait SECONDS, or clear a stale lock with `strongroom unlock`"


class VerificationFailed(ProblemFound):
    http_status = 422
    template = "{}"


def all_error_classes() -> list[type[StrongroomError]]:
    """Every class of the tree, depth first: the source of docs/errors.md."""
    out: list[type[StrongroomError]] = []

    def walk(cls: type[StrongroomError]) -> None:
        out.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(StrongroomError)
    return out


class PolicyDenied(ProblemFound):
    http_status = 403
    template = "{}"


class CheckFailed(PolicyDenied):
    """A protected branch's check refused a merge. Its output is shown to the user (the hint) but kept out of
    the audit log, which records only the message: a validator may print the very rows it rejects."""

    template = "check `{}` failed (exit {}) for {}; branch unchanged (output sha256 {})"

    def __init__(self, check: str = "", code: int = 0, branch: str = "", output: str = "") -> None:
        import hashlib  # only here: every command imports this module

        super().__init__(check, code, branch, hashlib.sha256(output.encode("utf-8", "surrogateescape")).hexdigest())
        self.output = output

    def hint(self) -> str | None:
        tail = " | ".join(self.output.strip().splitlines()[-5:])
        return f"its output ended: {tail}" if tail else None


class MergeConflict(ProblemFound):
    template = "{}"

    def hint(self) -> str | None:
        return "resolve with --strategy ours|theirs, or change one side and merge again"


class CatalogError(ProblemFound):
    http_status = 503
    template = "catalog: {}"


class StrongroomWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as one line."""


class CannotWrite(ProblemFound):
    """The machine refused a write outside the repository (a checkout's destination, a workspace, standard
    output): the disk is full, a quota is reached, the device failed. Not a bug; nothing stored was harmed."""

    http_status = 507
    template = "{}"


def refused_write(err: OSError) -> bool:
    """An OSError that says the machine's state refused a write (full disk, quota, read-only or failing
    device), as opposed to a path or permission the user can correct."""
    import errno  # built in, and only on an error path

    return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)
