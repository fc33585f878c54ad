"""The repository façade (``sr-repo/1``): create and open, typed objects, packs, index, refs, publish.

Layout of a repository folder (docs/format.md):

    config            plaintext JSON: format, id, suite, chunker, compression; authenticated by an HMAC
    keys/<id>         key slots: the master key wrapped by one or two KEKs (crypto.keyslot)
    keyring           sealed data keys, id key, chunker secret
    counters          sealed count of frames sealed under each data key (nonce budget)
    data/<xx>/<id>    pack files, named by the SHA-256 of their bytes
    index/<id>        index files, named by the SHA-256 of their bytes
    refs              sealed branches and tags with a generation counter
    signers           sealed trusted set of signers (store.trust); absent until the first signer
    locks/            publish lock and readers' shared locks

Write order (restic's invariants): packs, then the index that names them, then the refs that reach them.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from strongroom.backends.base import Backend, ObjectMissing
from strongroom.core import codec
from strongroom.core.ids import ObjectKind
from strongroom.core.model import Commit, Tree
from strongroom.crypto import aead
from strongroom.crypto.idhash import IdHasher
from strongroom.crypto.kdf import KdfParams, mac, mac_ok, subkey
from strongroom.crypto.keys import (
    ROTATE_AFTER_MESSAGES,
    SCOPE_KEY_BASE,
    Keyring,
    fingerprint,
    new_master_key,
    open_keyring,
    seal_keyring,
)
from strongroom.crypto.keyslot import (
    Credentials,
    KekRequest,
    KeySlot,
    as_credentials,
    encode_slot,
    make_slot,
    open_slot,
    parse_slot,
    successor_id,
)
from strongroom.crypto.secret import Secret
from strongroom.crypto.signing import Ed25519Signer
from strongroom.errors import (
    BranchMoved,
    DecryptionFailed,
    HsmError,
    InputError,
    IntegrityError,
    KeyUnavailable,
    NotARepository,
    PolicyDenied,
    RepositoryExists,
    RepositoryLocked,
    Shredded,
    StrongroomError,
    WrongPassphrase,
    WrongPin,
)
from strongroom.store import listing, lock
from strongroom.store.blob import BlobCodec
from strongroom.store.chunker import ChunkerParams
from strongroom.store.filecache import RACY_WINDOW_NS
from strongroom.store.index import Index, forget_parsed_files
from strongroom.store.pack import (
    TRAILER_LEN,
    PackBuilder,
    PackEntry,
    header_location,
    pack_path,
    parse_header,
)
from strongroom.store.refs import REFS_NAME, Protection, Refs, open_refs, seal_refs
from strongroom.store.trust import SIGNERS_NAME, TrustedSet, open_signers, seal_signers

FORMAT = "sr-repo/1"
DEFAULT_PACK_SIZE = 16 << 20
DEFAULT_COMPRESSION = 1  # zstd 1: level 2 stored the benchmark set 1 % smaller for 35 % more compression CPU
INDEX_LOAD_ROUNDS = 5  # rounds of reading the index files while the refs keep changing under them
# Index compaction: past INDEX_FILES_MOST files, the smallest are merged until INDEX_FILES_KEPT remain (plus the
# merged one). Every command reads every index file: after 1,000 commits, 1,000 files took 32 ms to load from
# the page cache and 17 files 6.9 ms. Merging the smallest first leaves the large files (an initial import's)
# alone.
INDEX_FILES_MOST = 32
INDEX_FILES_KEPT = 16
INDEX_MERGE_MOST = 64  # files deleted under the exclusive lock at once: readers wait for that (lock.py)
# A data folder's (stamp, indexed packs in it) when every pack in it was found indexed (adopt_orphan_packs).
PackMemo = dict[str, tuple[int, int]]
FOLDER_RACY_NS = 2 * RACY_WINDOW_NS  # the coarsest folder stamps in use (FAT) have 2-second steps
PACK_MEMO_FORMAT = "sr-packmemo/1"


def load_pack_memo(path: str) -> PackMemo:
    """A commit's memo of the data folders (a local cache: anything unreadable is an empty memo, which only
    means listing every pack once more)."""
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
        if raw.get("format") != PACK_MEMO_FORMAT:
            return {}
        return {str(k): (int(v[0]), int(v[1])) for k, v in raw["folders"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def save_pack_memo(path: str, memo: PackMemo) -> None:
    """Best effort (a local cache): a memo that cannot be written stays as it was, and so does the folder, with
    no temporary file left behind (a full disk)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": PACK_MEMO_FORMAT, "folders": memo}, f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclass(frozen=True)
class RepoConfig:
    repo_id: str
    created_ns: int
    suite: str
    chunker: str
    compression: int
    pack_size: int
    user: str

    def body(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "id": self.repo_id,
            "created_ns": self.created_ns,
            "suite": self.suite,
            "chunker": self.chunker,
            "compression": f"zstd/{self.compression}" if self.compression else "none",
            "pack_size": self.pack_size,
            "user": self.user,
        }


def _parse_config(data: bytes) -> tuple[RepoConfig, bytes, bytes]:
    try:
        obj = json.loads(data)
        tag = bytes.fromhex(obj.pop("mac"))
        if obj["format"] != FORMAT:
            raise IntegrityError(f"unsupported repository format {obj['format']!r}")
        comp = str(obj["compression"])
        cfg = RepoConfig(
            repo_id=str(obj["id"]),
            created_ns=int(obj["created_ns"]),
            suite=str(obj["suite"]),
            chunker=str(obj["chunker"]),
            compression=0 if comp == "none" else int(comp.split("/")[1]),
            pack_size=int(obj["pack_size"]),
            user=str(obj.get("user", "")),
        )
        bytes.fromhex(cfg.repo_id)
        return cfg, codec.dumps_canonical(obj), tag
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise IntegrityError("repository config is damaged") from None


def read_slots(backend: Backend) -> tuple[list[KeySlot], int]:
    """Every readable key slot (oldest first) and the number of damaged ones."""
    slots: list[KeySlot] = []
    damaged = 0
    for name, _ in backend.list("keys"):
        try:
            slot = parse_slot(backend.get(name))
        except IntegrityError:
            damaged += 1
            continue
        if name.rsplit("/", 1)[-1] != slot.slot_id:
            damaged += 1
            continue
        slots.append(slot)
    slots.sort(key=lambda s: (s.created_ns, s.slot_id))
    return slots, damaged


def missing_config(backend: Backend) -> StrongroomError:
    """No config: not a repository at all (exit 2), unless the rest of one is there (damage, exit 1)."""
    try:
        if backend.size(REFS_NAME) is not None or any(True for _ in backend.list("keys")):
            return IntegrityError("the repository's config is missing (the repository is damaged)")
    except (OSError, StrongroomError):  # a folder this user cannot read
        pass
    return NotARepository(backend.describe())


class Repository:
    def __init__(self, backend: Backend, config: RepoConfig, master: Secret, keyring: Keyring) -> None:
        self.backend = backend
        self.config = config
        self.keyring = keyring
        self.fingerprint = fingerprint(master)
        self.context = bytes.fromhex(config.repo_id)
        self.sealer = aead.Sealer(keyring.data_keys, keyring.current, reload=self._fresh_data_keys)
        self.codec = BlobCodec(self.sealer, config.compression)
        self.hasher = IdHasher(keyring.id_key)
        self.base_hasher = self.hasher
        self.chunker_params = ChunkerParams.parse(config.chunker)
        self.chunker_seed = keyring.chunker_seed
        self._master = master
        self._index: Index | None = None
        self.opened_slot = ""  # the key slot that opened this repository, when a slot did
        # Scopes (store.scopes): their keys when this machine's keystore holds them, and every scope's state.
        self.scope_key_id: int | None = None  # set on a scoped view: new chunks and trees go under this key
        self.unscoped: Repository = self
        self._scope_keys: dict[int, tuple[Secret, IdHasher, int]] = {}
        self.scope_states: dict[int, tuple[str, str]] = {}  # key id -> (scope name, state)
        self._scope_ids: dict[int, str] = {}
        # Called with every trusted set read: the client's pin (store.clientstate.PinnedSigners) raises on a
        # set replaced or rolled back.
        self.signers_guard: Callable[[TrustedSet], None] | None = None

    def __repr__(self) -> str:
        return f"<Repository {self.config.repo_id[:12]} at {self.backend.describe()}>"

    # ---------------------------------------------------------------- scopes

    def register_scope(
        self, key_id: int, name: str, state: str, keys: tuple[Secret, Secret, int] | None, scope_id: str = ""
    ) -> None:
        self.scope_states[key_id] = (name, state)
        if scope_id:
            self._scope_ids[key_id] = scope_id
        if keys is None:
            self._scope_keys.pop(key_id, None)
            self.sealer.remove_key(key_id)
        else:
            data_key, id_key, seed = keys
            self._scope_keys[key_id] = (data_key, IdHasher(id_key), seed)
            self.sealer.add_key(key_id, data_key)

    def scoped(self, key_id: int) -> Repository:
        """A view that writes new chunks and trees under a scope's keys (pack headers, index files, refs and
        commit objects stay under the repository's keys: ``unscoped``)."""
        _, hasher, seed = self._scope_keys[key_id]
        self.index  # noqa: B018 - loaded now, so that the view and the repository share one index
        view = copy.copy(self)
        view.hasher = hasher
        view.chunker_seed = seed
        view.scope_key_id = key_id
        view.unscoped = self
        keys = {k: v[0] for k, v in self._scope_keys.items()}
        sealer = aead.Sealer({**self.keyring.data_keys, **keys}, key_id, sealed=self.sealer.sealed)
        view.codec = BlobCodec(sealer, self.config.compression)
        return view

    def hasher_of(self, frame: bytes | memoryview) -> IdHasher:
        """The id hasher that named the object in ``frame``: a scope's, or the repository's."""
        kid = aead.key_id_of(frame)
        scope = self._scope_keys.get(kid)
        return scope[1] if scope is not None else self.base_hasher

    # ---------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        backend: Backend,
        credentials: Secret | Credentials,
        kdf: KdfParams,
        *,
        keks: Sequence[KekRequest] = (KekRequest("passphrase"),),
        user: str = "",
        compression: int = DEFAULT_COMPRESSION,
        chunker: ChunkerParams | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
    ) -> Repository:
        if backend.size("config") is not None or any(True for _ in backend.list("keys")):
            raise RepositoryExists(backend.describe())
        now = time.time_ns()
        config = RepoConfig(
            repo_id=os.urandom(32).hex(),
            created_ns=now,
            suite=aead.SUITE,
            chunker=(chunker or ChunkerParams()).name,
            compression=compression,
            pack_size=pack_size,
            user=user,
        )
        master = new_master_key()
        keyring = Keyring.generate(now)
        # The slot first: the KEKs (a PIN, a token, a key file) are checked before anything else is written.
        slot = make_slot(config.repo_id, master, keks, as_credentials(credentials), kdf, now)
        backend.put(f"keys/{slot.slot_id}", encode_slot(slot))
        backend.put("keyring", seal_keyring(master, config.repo_id, keyring))
        repo = cls(backend, config, master, keyring)
        repo._write_refs(Refs(index_files=()))
        repo._write_counters({keyring.current: 0})
        # The config goes last: a folder without one is not (yet) a repository.
        body = codec.dumps_canonical(config.body())
        signed = dict(config.body(), mac=mac(subkey(master, "config"), body).hex())
        backend.put("config", json.dumps(signed, indent=1, sort_keys=True).encode())
        return repo

    @classmethod
    def open(cls, backend: Backend, credentials: Secret | Credentials) -> Repository:
        try:
            raw_config = backend.get("config")
        except ObjectMissing:
            raise missing_config(backend) from None
        config, body, tag = _parse_config(raw_config)
        creds = as_credentials(credentials)
        slots, damaged = read_slots(backend)
        master = None
        refusals: list[InputError] = []
        opened_slot = ""
        refused_tokens: set[tuple[str, str]] = set()
        for slot in slots:
            tokens = {(str(x.params["module"]), str(x.params["token"])) for x in slot.layers if x.kind == "pkcs11"}
            if tokens & refused_tokens:
                continue  # the PIN was refused once: another try could lock the token (a few tries at most)
            try:
                master = open_slot(slot, config.repo_id, creds)
                opened_slot = slot.slot_id
                break
            except WrongPin as e:
                refusals.append(e)
                refused_tokens |= tokens
            except (WrongPassphrase, HsmError, KeyUnavailable, InputError) as e:
                refusals.append(e)
            except IntegrityError:
                damaged += 1
        if master is None:
            if damaged and refusals:
                # "wrong passphrase" would send the user hunting for another passphrase: their slot is damaged
                raise IntegrityError(
                    f"key slot is damaged: the repository cannot be opened (and {len(refusals)} other slot(s) "
                    "refused these credentials)"
                )
            if refusals:
                # The most telling refusal: a credential that was tried and refused beats one not at hand.
                raise next((e for e in refusals if not isinstance(e, KeyUnavailable)), refusals[0])
            if damaged:
                raise IntegrityError("key slot is damaged: the repository cannot be opened")
            raise IntegrityError("the repository has no key slots; a paper sheet restores one: strongroom key recover")
        repo = cls._unlocked(backend, config, body, tag, master)
        repo.opened_slot = opened_slot
        return repo

    @classmethod
    def open_with_master(cls, backend: Backend, master: Secret) -> Repository:
        """Open with the master key itself (a paper recovery sheet); refused unless it is this repository's."""
        try:
            raw_config = backend.get("config")
        except ObjectMissing:
            raise missing_config(backend) from None
        config, body, tag = _parse_config(raw_config)
        if not mac_ok(subkey(master, "config"), body, tag):
            raise InputError("that master key does not belong to this repository")
        return cls._unlocked(backend, config, body, tag, master)

    @classmethod
    def _unlocked(cls, backend: Backend, config: RepoConfig, body: bytes, tag: bytes, master: Secret) -> Repository:
        if not mac_ok(subkey(master, "config"), body, tag):
            raise IntegrityError("repository config was modified")
        return cls(backend, config, master, cls._read_keyring(backend, config, master))

    @staticmethod
    def _read_keyring(backend: Backend, config: RepoConfig, master: Secret) -> Keyring:
        try:
            return open_keyring(master, config.repo_id, backend.get("keyring"))
        except ObjectMissing:
            raise IntegrityError("keyring is missing") from None

    # ---------------------------------------------------------------- key slots

    def key_slots(self) -> list[KeySlot]:
        return read_slots(self.backend)[0]

    def _new_slot(
        self, keks: Sequence[KekRequest], credentials: Credentials, kdf: KdfParams, slot_id: str = ""
    ) -> KeySlot:
        slot = make_slot(self.config.repo_id, self._master, keks, credentials, kdf, time.time_ns(), slot_id)
        # Check the new slot opens before it is stored: a slot that cannot open is a trap.
        if open_slot(slot, self.config.repo_id, credentials) != self._master:
            raise IntegrityError("the new key slot does not open the repository")
        return slot

    def add_key_slot(self, keks: Sequence[KekRequest], credentials: Credentials, kdf: KdfParams) -> KeySlot:
        """A new, alternative way in: a slot that wraps this repository's master key with ``keks``."""
        slot = self._new_slot(keks, credentials, kdf)
        self.backend.put(f"keys/{slot.slot_id}", encode_slot(slot))
        return slot

    def replace_key_slot(
        self, old_id: str, keks: Sequence[KekRequest], credentials: Credentials, kdf: KdfParams
    ) -> KeySlot:
        """A new slot in place of ``old_id`` (a changed passphrase). The new slot is stored before the old one is
        removed, so that an interruption loses no way in; both under the publish lock, taken before anything is
        written (on a full disk the lock is what fails, with nothing changed). If anything fails once the new
        slot is stored, it is removed again: a change reported as failed leaves the old way in, and only it.

        The new slot's id is derived from the old one's (``successor_id``). A change killed between storing the
        new slot and removing the old leaves both; run again with the old passphrase, it overwrites the new
        slot that run left instead of adding a second one. A change made from a slot also removes the slots
        that slot replaced (found by their ids), which such a killed change left: so a change run from the new
        passphrase instead leaves no way in for the old one either. Those go before ``old_id``, so that a
        change killed among the removals still leaves the slot it was opened with, to run it again."""
        slot = self._new_slot(keks, credentials, kdf, successor_id(self.config.repo_id, old_id))
        with lock.publish_lock(self.backend, "key change-passphrase", 5.0):
            ids = {s.slot_id for s in self.key_slots()}
            if old_id not in ids:
                raise InputError(f"key slot {old_id!r} was removed meanwhile: nothing changed")
            replaced = self._predecessors(old_id, ids - {slot.slot_id}) + self._successors(slot.slot_id, ids - {old_id})
            self.backend.put(f"keys/{slot.slot_id}", encode_slot(slot))
            try:
                for gone in [*replaced, old_id]:
                    self.backend.delete(f"keys/{gone}")
            except BaseException:
                with contextlib.suppress(StrongroomError, OSError):
                    self.backend.delete(f"keys/{slot.slot_id}")
                raise
        return slot

    def _successors(self, slot_id: str, ids: set[str]) -> list[str]:
        """The slots among ``ids`` that changes made from ``slot_id``'s passphrase (and from theirs) stored and
        were killed before they finished: a change that puts a new slot in ``slot_id``'s place leaves none of
        them opening."""
        chain: list[str] = []
        while (
            after := successor_id(self.config.repo_id, chain[-1] if chain else slot_id)
        ) in ids and after not in chain:
            chain.append(after)
        return chain

    def _predecessors(self, slot_id: str, ids: set[str]) -> list[str]:
        """The slots among ``ids`` that ``slot_id`` replaced, and those they replaced, newest first: each one's
        successor id is the slot after it (what a passphrase change killed before its last step leaves)."""
        by_successor = {successor_id(self.config.repo_id, i): i for i in ids}
        chain: list[str] = []
        while (before := by_successor.get(chain[-1] if chain else slot_id)) is not None and before not in chain:
            chain.append(before)
        return chain

    def remove_key_slot(self, slot_id: str) -> KeySlot:
        # Under the publish lock: two removals at once must not each see the other's slot and leave none.
        with lock.publish_lock(self.backend, "key remove-kek", 5.0):
            slots = {s.slot_id: s for s in self.key_slots()}
            if slot_id not in slots:
                raise InputError(f"no key slot {slot_id!r} (strongroom key list shows them)")
            if len(slots) == 1:
                raise InputError("refusing to remove the last key slot: the repository could never be opened again")
            self.backend.delete(f"keys/{slot_id}")
            return slots[slot_id]

    def master_matches(self, candidate: Secret) -> bool:
        return candidate == self._master

    def export_master(self) -> Secret:
        """The master key itself, for a paper recovery sheet (the service asks for a typed confirmation)."""
        return self._master

    def log_signer(self) -> Ed25519Signer:
        """The repository's Ed25519 log key (audit checkpoints, backup manifests)."""
        if self.keyring.log_seed is None:
            raise IntegrityError("this repository has no log key")
        return Ed25519Signer.from_seed(f"strongroom-{self.config.repo_id[:16]}", self.keyring.log_seed)

    # ---------------------------------------------------------------- refs

    def read_refs(self) -> Refs:
        try:
            data = self.backend.get(REFS_NAME)
        except ObjectMissing:
            raise IntegrityError("refs are missing") from None
        try:
            return open_refs(self.sealer, self.context, data)
        except StrongroomError:
            raise IntegrityError("refs are damaged") from None

    def _write_refs(self, refs: Refs) -> None:
        self.backend.put(REFS_NAME, seal_refs(self.sealer, self.context, refs))

    def edit_refs(
        self,
        change: Callable[[Refs], None],
        command: str,
        wait: float = 0.0,
        prepare: Callable[[], object] | None = None,
    ) -> Refs:
        """Apply change() to the current refs under the publish lock and store them with the next generation.
        change() raises to refuse (for example BranchMoved when a branch is no longer where it was).
        prepare() runs first under the lock (a commit writes its index there). The frames this process
        sealed count against their keys whether or not anything is published: they are stored."""
        with lock.publish_lock(self.backend, command, wait):
            try:
                if self.scope_key_id is not None:
                    # A scope shredded while this commit ran: publishing would name data nobody can read.
                    scope_id = self._scope_ids.get(self.scope_key_id, "")
                    if self.backend.size(f"scopes/{scope_id}-shredded") is not None:
                        raise Shredded(self.scope_states[self.scope_key_id][0])
                self.ensure_current_key()
                if prepare is not None:
                    prepare()
                refs = self.read_refs()
                before = Refs(refs.generation, dict(refs.branches), dict(refs.tags))
                change(refs)
                refs.record_changes(before, time.time_ns())
            except BaseException:
                with contextlib.suppress(StrongroomError):  # the refusal is what the caller must see
                    self._account_messages()
                raise
            self._publish_refs(refs, self._index_listing(refs.index_files))
            return refs

    def _publish_refs(self, refs: Refs, index_files: tuple[str, ...]) -> None:
        """Store edited refs as the next generation, listing ``index_files``; the frames this process sealed
        count against their keys first. The caller holds the publish lock."""
        self._account_messages()
        refs.generation += 1
        refs.stored = None  # changed: its digest is that of the new encoding, which is what gets stored
        refs.index_files = index_files
        self._write_refs(refs)

    def _index_listing(self, listed: tuple[str, ...] | None) -> tuple[str, ...]:
        """The index files the next refs list: every one present (this publish's, and any an interrupted
        commit left) and every one listed before, present or not, so that a lost index file stays reported
        by `verify --structure` until `repair index` replaces the index."""
        present = {name.rsplit("/", 1)[-1] for name, _ in self.backend.list("index")}
        return tuple(sorted(n for n in present.union(listed or ()) if listing.is_name(n)))  # junk is not listed

    def update_refs(
        self,
        branch: str,
        expected: bytes | None,
        new: bytes,
        command: str,
        wait: float = 0.0,
        prepare: Callable[[], object] | None = None,
        *,
        merging: bool = False,
        protection: Protection | None = None,
    ) -> Refs:
        """Compare-and-swap one branch; BranchMoved if it no longer points at ``expected``.

        Protection is checked here, under the lock, against the refs being replaced: a check made before the
        command read its data leaves a window (a commit can take minutes) in which the branch gets protected.
        A protected branch is moved only by a merge (``merging``), and only when ``protection`` (what the merge
        enforced: its checks and signatures) is the branch's protection now, which a merge into an unprotected
        branch gives as None; PolicyDenied otherwise."""

        def swap(refs: Refs) -> None:
            now = refs.protected.get(branch)
            if not merging and now is not None:
                raise PolicyDenied(f"branch {branch} is protected: it takes new versions only by merge")
            if merging and now != protection:
                raise PolicyDenied(f"protection of {branch} changed while merging; retry")
            if refs.branches.get(branch) != expected:
                raise BranchMoved()
            refs.branches[branch] = new

        return self.edit_refs(swap, command, wait, prepare)

    # ---------------------------------------------------------------- trusted signers

    def read_signers(self) -> TrustedSet:
        """The trusted set of signers (empty in a repository that has none yet)."""
        try:
            data: bytes | None = self.backend.get(SIGNERS_NAME)
        except ObjectMissing:
            data = None
        try:
            trusted = TrustedSet() if data is None else open_signers(self.sealer, self.context, data)
        except StrongroomError:
            raise IntegrityError("the trusted signers are damaged") from None
        if self.signers_guard is not None:
            self.signers_guard(trusted)
        return trusted

    def edit_signers(self, change: Callable[[TrustedSet], None], command: str, wait: float = 5.0) -> TrustedSet:
        """Apply change() to the trusted set under the publish lock and store it with the next generation."""
        with lock.publish_lock(self.backend, command, wait):
            self.ensure_current_key()
            trusted = self.read_signers()
            change(trusted)
            trusted.generation += 1
            data = seal_signers(self.sealer, self.context, trusted)
            self._account_messages()
            self.backend.put(SIGNERS_NAME, data)
            if self.signers_guard is not None:
                self.signers_guard(trusted)  # the client pins what it wrote: a revocation cannot be put back
            return trusted

    # ---------------------------------------------------------------- nonce budget

    def _read_counters(self) -> dict[int, int]:
        try:
            plain = self.sealer.open(self.backend.get("counters"), ObjectKind.COUNTERS, self.context)
            return {int(k): int(v) for k, v in json.loads(plain).items()}
        except (ObjectMissing, StrongroomError, ValueError):
            return {}

    def _write_counters(self, counts: dict[int, int]) -> None:
        self.follow_current_key()  # also on a refused publish: the counts must stay readable
        plain = codec.dumps_canonical({str(k): v for k, v in counts.items()})
        self.backend.put("counters", self.sealer.seal(plain, ObjectKind.COUNTERS, self.context))

    def _account_messages(self) -> None:
        """Add the frames sealed since the last publish to each key's persisted count; rotate the current
        data key at the cap. A scope's key cannot rotate (its KEK is elsewhere): at the cap the publish is
        refused, after the count is stored."""
        counts = self._read_counters()
        for kid, n in self.sealer.sealed.items():
            counts[kid] = counts.get(kid, 0) + n
        self.sealer.sealed.clear()
        if counts.get(self.sealer.current, 0) >= ROTATE_AFTER_MESSAGES:
            self.rotate_data_key()
            counts[self.sealer.current] = 0
        self._write_counters(counts)
        if self.scope_key_id is not None and counts.get(self.scope_key_id, 0) >= ROTATE_AFTER_MESSAGES:
            name = self.scope_states.get(self.scope_key_id, ("?", ""))[0]
            raise KeyUnavailable(
                f"scope {name!r} has sealed {counts[self.scope_key_id]} objects, the most one key may seal; "
                "nothing was published: commit into a new scope"
            )

    def message_count(self) -> dict[int, int]:
        return self._read_counters()

    def follow_current_key(self) -> None:
        """Seal from now on under the stored current data key. A long-lived handle may have opened before
        another process rotated it, or retired the key this one opened with (`key reencrypt --retire`
        destroys it: anything sealed under it could never be read). Frames sealed so far still count."""
        stored = self._read_keyring(self.backend, self.config, self._master)
        if stored.current != self.sealer.current or set(stored.data_keys) != set(self.keyring.data_keys):
            self.keyring = stored
            self._use_keyring()

    def ensure_current_key(self) -> None:
        """Refuse to store anything under a data key that `key reencrypt --retire` destroyed after this process
        opened the repository (what it would write could never be read)."""
        stored = self._read_keyring(self.backend, self.config, self._master)
        if self.sealer.current not in stored.data_keys:
            raise KeyUnavailable(
                f"data key {self.sealer.current} was retired while this command ran; nothing was published, retry"
            )

    def rotate_data_key(self) -> int:
        """A new current data key; older ones stay for reading. Called under the publish lock, and reads the
        stored keyring first, so a rotation by another process is kept, never overwritten."""
        self.reload_keyring()
        new_id = self.keyring.rotate(time.time_ns())
        self.save_keyring()
        return new_id

    def save_keyring(self) -> None:
        """Store the keyring as it is in memory (under the publish lock, after a reload and one change)."""
        self.backend.put("keyring", seal_keyring(self._master, self.config.repo_id, self.keyring))
        self._use_keyring()

    def rewrite_index(self, dropped: set[str]) -> None:
        """One new index of every indexed pack but ``dropped`` (gc, reencrypt: the old packs are deleted
        only after this)."""
        fresh = Index()
        for pid, entries in self.index.packs.items():
            if pid not in dropped:
                fresh.add_pack(pid, entries)
        self.replace_index(fresh)

    @contextlib.contextmanager
    def packs_replacing(self, dropped: set[str]) -> Iterator[list[str]]:
        """gc and reencrypt: the block writes the packs that replace ``dropped`` and lists them in the list it
        is given; then one index without ``dropped`` is published and those packs are deleted. If anything
        fails before that index is published, the packs the block wrote are deleted: nothing names them, and
        on a full disk they would only make it fuller (and the next attempt fail sooner)."""
        written: list[str] = []
        before = {name.removeprefix("index/") for name, _ in self.backend.list("index")}
        try:
            yield written
            self.rewrite_index(dropped)
        except BaseException:
            if not self._published_since(before):
                for pid in written:
                    with contextlib.suppress(Exception):
                        self.backend.delete(pack_path(pid))
            raise
        for pid in sorted(dropped):
            self.backend.delete(pack_path(pid))

    def _published_since(self, index_names: set[str]) -> bool:
        """Whether the refs list an index file other than ``index_names`` (yes, when they cannot be read)."""
        try:
            listed = self.read_refs().index_files
        except Exception:
            return True
        return not set(listed or ()) <= index_names

    def replace_index(self, fresh: Index) -> int:
        """Store ``fresh`` as the only index file, publish refs that list it alone, then remove the index
        files it replaces (their number is returned). In this order a crash leaves either the old files
        listed and present, or the new one listed and old ones unlisted. The caller holds the publish lock."""
        old_files = [name for name, _ in self.backend.list("index")]
        name, data = fresh.encode(self.sealer, self.context, sorted(fresh.packs))
        self.backend.put(f"index/{name}", data)
        self._publish_refs(self.read_refs(), (name,))
        removed = 0
        for old in old_files:
            if old != f"index/{name}":
                self.backend.delete(old)
                removed += 1
        fresh.files.add(f"index/{name}")
        self._index = fresh
        return removed

    def rotate_key(self, command: str = "key rotate") -> int:
        """``key rotate``: instant, no data rewritten."""
        with lock.publish_lock(self.backend, command, 5.0):
            return self.rotate_data_key()

    def reload_keyring(self) -> None:
        self.keyring = self._read_keyring(self.backend, self.config, self._master)
        self._use_keyring()

    def _use_keyring(self) -> None:
        self.sealer = aead.Sealer(
            self.keyring.data_keys, self.keyring.current, reload=self._fresh_data_keys, sealed=self.sealer.sealed
        )
        for kid, (data_key, _, _) in self._scope_keys.items():
            self.sealer.add_key(kid, data_key)
        self.codec = BlobCodec(self.sealer, self.config.compression)

    def _fresh_data_keys(self, key_id: int) -> dict[int, Secret]:
        """A frame names a key we do not hold: a scope's (shredded, or not in this machine's keystore), or a
        data key rotated in after we opened (then the stored keyring has it)."""
        if key_id in self.scope_states:
            name, state = self.scope_states[key_id]
            if state == "shredded":
                raise Shredded(name)
            raise KeyUnavailable(f"scope {name!r}: its key is not in this machine's keystore (STRONGROOM_KEYSTORE)")
        if key_id >= SCOPE_KEY_BASE:
            from strongroom.store.scopes import list_scopes  # scopes builds on this module

            if not any(s.key_id == key_id for s in list_scopes(self)):
                # no scope of this repository has that key id: the frame's header is damaged
                raise DecryptionFailed(f"no key of this repository has id {key_id}")
            raise KeyUnavailable("the data is sealed under a scope whose keys this client has not loaded")
        self.keyring = self._read_keyring(self.backend, self.config, self._master)
        return self.keyring.data_keys

    # ---------------------------------------------------------------- index and objects

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = self.load_index()
        return self._index

    @contextlib.contextmanager
    def reading(self, command: str) -> Iterator[None]:
        """A reader's lock (gc deletes nothing while it is held), then a fresh index if one was loaded before
        the lock: gc may have run in between, and a writer must deduplicate only against what is still there."""
        with lock.read_lock(self.backend, command):
            if self._index is not None:
                self._index.replace_with(self.load_index())  # in place: scoped views share this index
            yield

    def load_index(self) -> Index:
        """Every index file, read without a lock: gc, `repair index` and index compaction write the new file
        and then the refs before they delete the old files. So a round of reading (refs, listing, the files
        not read yet) that saw the refs unchanged from start to end has every entry: a deletion during it
        comes from a replacement published before it began, whose new file was there to be listed. A file
        deleted before it could be read is skipped; its entries are in the file that replaced it."""
        idx = Index()
        read: set[str] = set()
        names: list[str] = []
        for _ in range(INDEX_LOAD_ROUNDS):
            refs_before = self._raw_refs()
            names = [name for name, _ in self.backend.list("index")]
            for name in names:
                if name not in read:
                    self._load_index_file(idx, name)
                    read.add(name)
            if self._raw_refs() == refs_before:
                break
        else:
            # The refs kept changing: read it all once more under a reader lock, beside which no replacement
            # runs (without write access, what the rounds read is what there is).
            with contextlib.suppress(StrongroomError, OSError), lock.read_lock(self.backend, "index load"):
                whole, listed = Index(), [name for name, _ in self.backend.list("index")]
                for name in listed:
                    self._load_index_file(whole, name)
                idx, names = whole, listed
        forget_parsed_files(self.context, set(names))
        return idx

    def _raw_refs(self) -> bytes | None:
        try:
            return self.backend.get(REFS_NAME)
        except ObjectMissing:
            return None

    def _load_index_file(self, idx: Index, name: str) -> None:
        for attempt in (1, 2):  # a read that fails once and then succeeds is not damage
            try:
                idx.load_file(name, self.backend.get(name), self.sealer, self.context)
                return
            except ObjectMissing:
                if self.backend.size(name) is None:
                    return  # replaced since it was listed
                if attempt == 2:
                    idx.bad_files.append(name)
            except StrongroomError:
                if attempt == 2:
                    idx.bad_files.append(name)

    def compact_index(self) -> int:
        """Merge the smallest index files into one once there are more than INDEX_FILES_MOST (each commit
        writes one, and every command reads them all), at most INDEX_MERGE_MOST at a time. The files are read
        and merged without a lock (they are content-named: they never change); publishing takes the publish
        lock and the exclusive lock without waiting, and is skipped when either is held or a reader is there
        (a later commit tries again), or when a file to merge went meanwhile. A damaged, lost or junk-named
        index file is left for verify to report and `repair index` to replace. Returns how many files were
        merged (0: none)."""
        present = self._index_files_present()
        if len(present) <= INDEX_FILES_MOST:
            return 0
        count = min(len(present) - INDEX_FILES_KEPT, INDEX_MERGE_MOST)
        victims = sorted(present, key=lambda n: (present[n], n))[:count]
        merged = Index()
        try:
            for name in victims:
                merged.load_file(name, self.backend.get(name), self.sealer, self.context)
        except StrongroomError:
            return 0
        try:
            with lock.publish_lock(self.backend, lock.COMPACTING), lock.exclusive_lock(self.backend, lock.COMPACTING):
                return self._publish_compaction(victims, merged)
        except RepositoryLocked:
            return 0

    def _index_files_present(self) -> dict[str, int]:
        """Index files by path, with their sizes; junk in `index/` is not one (verify reports it)."""
        return {n: size for n, size in self.backend.list("index") if listing.is_name(n.rsplit("/", 1)[-1])}

    def _publish_compaction(self, victims: list[str], merged: Index) -> int:
        present = self._index_files_present()
        names = {name.rsplit("/", 1)[-1] for name in present}
        refs = self.read_refs()
        if not set(victims) <= set(present) or not set(refs.index_files or ()) <= names:
            return 0  # merged by another process meanwhile, or a listed file is lost
        self.ensure_current_key()
        name, data = merged.encode(self.sealer, self.context, sorted(merged.packs))
        self.backend.put(f"index/{name}", data)
        gone = {v.rsplit("/", 1)[-1] for v in victims} - {name}
        self._publish_refs(refs, tuple(sorted((names - gone) | {name})))
        for victim in victims:
            if victim != f"index/{name}":
                self.backend.delete(victim)
        if self._index is not None:
            self._index.files.difference_update(victims)
            self._index.files.add(f"index/{name}")
        return len(victims)

    def adopt_orphan_packs(self, memo: PackMemo | None = None) -> list[str]:
        """Packs left by an interrupted commit (or read ahead by an agent's watch) are not in any index: read
        their headers so that the next commit reuses what they hold.

        With ``memo`` (a commit's, updated in place), a folder of packs is not listed again while its stamp
        and the number of indexed packs in it are what they were when every pack in it was last found
        indexed: listing 60,000 packs took 0.2 s, 0.7 s from a cold disk. A folder skipped wrongly could only
        cost deduplication: what is not adopted is stored again."""
        if memo is None:
            return self._adopt_listed(self.backend.list("data"))[0]
        # "Now" by the clock that stamps the folders (a file server's may lag this one's): the stamp of the
        # locks folder, which this command's reader lock has just changed; this clock's if that is earlier.
        # Read before the folders' stamps, so that a lock taken meanwhile cannot move it past them.
        started = min(time.time_ns(), (self.backend.folder_stamps("") or {}).get("locks", time.time_ns()))
        stamps = self.backend.folder_stamps("data")
        if stamps is None:
            return self._adopt_listed(self.backend.list("data"))[0]
        indexed = collections.Counter(pid[:2] for pid in self.index.packs)
        adopted: list[str] = []
        for folder, stamp in stamps.items():
            if memo.get(folder) == (stamp, indexed[folder]):
                continue
            found, complete = self._adopt_listed(self.backend.list(f"data/{folder}"))
            adopted += found
            # Stamps have the clock's granularity (FAT's is 2 s): a folder written to within that window may
            # change again without its stamp changing, so it is listed again next time.
            if complete and stamp < started - FOLDER_RACY_NS:
                memo[folder] = (stamp, indexed[folder] + len(found))
            else:
                memo.pop(folder, None)
        for folder in set(memo) - set(stamps):
            del memo[folder]
        return adopted

    def _adopt_listed(self, listed: Iterable[tuple[str, int]]) -> tuple[list[str], bool]:
        """Index the listed packs that no index names; True when every listed pack is indexed now."""
        idx = self.index
        adopted = []
        complete = True
        for name, size in listed:
            pid = name.rsplit("/", 1)[-1]
            if pid in idx.packs:
                continue
            try:
                entries = self.read_pack_header(pid, size)
                self._count_frames_of(pid, size, entries)
            except StrongroomError:
                complete = False
                continue
            idx.add_pack(pid, entries)
            adopted.append(pid)
        return adopted, complete

    def _count_frames_of(self, pack_id: str, size: int, entries: list[PackEntry]) -> None:
        """The frames of a pack an interrupted command left were sealed, and stored, by a process whose count
        died with it: they count against their keys' nonce budgets with the next publish (orphans are rare,
        so one small read per frame is cheap)."""
        name = pack_path(pack_id)
        start, _ = header_location(size, self.backend.get_range(name, size - TRAILER_LEN, TRAILER_LEN))
        counts = self.sealer.sealed
        for offset in [start, *(e.offset for e in entries)]:
            kid = aead.key_id_of(self.backend.get_range(name, offset, aead.HEADER_LEN))
            counts[kid] = counts.get(kid, 0) + 1

    def read_pack_header(self, pack_id: str, size: int | None = None) -> list[PackEntry]:
        name = pack_path(pack_id)
        if size is None:
            size = self.backend.size(name)
            if size is None:
                raise ObjectMissing(name)
        trailer = self.backend.get_range(name, size - TRAILER_LEN, TRAILER_LEN)
        start, hlen = header_location(size, trailer)
        return parse_header(self.sealer, self.context, self.backend.get_range(name, start, hlen))

    def read_object(self, object_id: bytes, kind: int) -> bytes:
        return self.open_frame(object_id, kind, self.fetch_frame(object_id, kind))

    def fetch_frame(self, object_id: bytes, kind: int) -> bytes:
        """The stored (sealed) frame of an object: the I/O half of read_object, safe to run on a thread."""
        loc = self.index.get(object_id, kind)
        if loc is None:
            raise ObjectMissing(f"object {object_id.hex()[:16]}")
        tried: set[str] = set()
        while True:  # the index's copy, then each other copy in turn while packs turn out to be gone
            try:
                return self.backend.get_range(pack_path(loc.pack_id), loc.offset, loc.length)
            except ObjectMissing:
                tried.add(loc.pack_id)
                other = self.index.elsewhere(object_id, kind, tried)
                if other is None:
                    raise
                loc = other

    def open_frame(self, object_id: bytes, kind: int, frame: bytes) -> bytes:
        """Decrypt, decompress and check a fetched frame against its id: the CPU half of read_object."""
        plain = self.codec.decode(frame, kind, object_id)
        if self.hasher_of(frame)(plain) != object_id:
            raise IntegrityError(f"object {object_id.hex()[:16]} does not match its id")
        return plain

    def load_tree(self, tree_id: bytes) -> Tree:
        return codec.decode_tree(self.read_object(tree_id, ObjectKind.TREE))

    def load_commit(self, commit_id: bytes) -> Commit:
        return codec.decode_commit(self.read_object(commit_id, ObjectKind.COMMIT))

    def write_pack(self, builder: PackBuilder) -> str:
        pack_id, data, entries = builder.finish(self.sealer, self.context)
        self.backend.put(pack_path(pack_id), data)
        self.index.add_pack(pack_id, entries)
        return pack_id

    def write_index(self, pack_ids: list[str]) -> str | None:
        if not pack_ids:
            return None
        self.ensure_current_key()
        name, data = self.index.encode(self.sealer, self.context, pack_ids)
        self.backend.put(f"index/{name}", data)
        self.index.files.add(f"index/{name}")
        return name
