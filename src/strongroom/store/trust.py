"""The trusted set of signers (``sr-signers/1``): one sealed object, ``signers``, replaced under the publish
lock like the refs.

Each entry names a signer and its public key, who added it and when, and who revoked it and when. Every
entry but the first is *endorsed*: signed, at ``signer add``, by the key of a signer already trusted (the
message is ``strongroom-signer-add/1`` ‖ repository id ‖ the entry's canonical JSON). The first entry, made
by ``init`` (or by the first commit of a repository that has none), endorses itself: it is the set's root.
So someone who holds the repository key but no trusted signing key cannot slip a key of their own into the
set unnoticed: it would not chain to the root (docs/signing.md states what remains: replacing the whole set).

A version's signature is then one of: ``valid``, ``invalid`` (does not verify, or its key is not the one
the set records under that fingerprint), ``unsigned``, ``untrusted`` (no trusted entry for its key, or an
entry that does not chain to the root) and ``revoked``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from strongroom.core.codec import commit_signing_message, dumps_canonical, loads_record
from strongroom.core.ids import ObjectKind
from strongroom.core.model import Commit
from strongroom.crypto.aead import Sealer
from strongroom.crypto.commitsig import CommitSigner, PublicKey, check_signer_name
from strongroom.errors import InputError, IntegrityError

SIGNERS_NAME = "signers"
FORMAT = "sr-signers/1"
ADD_DOMAIN = b"strongroom-signer-add/1\n"

VALID, INVALID, UNSIGNED, UNTRUSTED, REVOKED = "valid", "invalid", "unsigned", "untrusted", "revoked"


@dataclass(frozen=True)
class TrustedSigner:
    name: str
    public: PublicKey
    added_ns: int
    added_by: str
    endorser: str  # fingerprint of the key that endorsed this entry (its own for the root)
    endorsement: bytes
    revoked_ns: int = 0
    revoked_by: str = ""

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    @property
    def alg(self) -> str:
        return self.public.alg

    @property
    def revoked(self) -> bool:
        return self.revoked_ns != 0

    def record(self) -> dict[str, object]:
        return {
            "name": self.name,
            "alg": self.alg,
            "public": self.public.raw.hex(),
            "added_ns": self.added_ns,
            "added_by": self.added_by,
            "endorser": self.endorser,
            "endorsement": self.endorsement.hex(),
            "revoked_ns": self.revoked_ns,
            "revoked_by": self.revoked_by,
        }


def endorsement_message(repo_id: str, name: str, public: PublicKey, added_ns: int, added_by: str) -> bytes:
    body = {"name": name, "alg": public.alg, "public": public.raw.hex(), "added_ns": added_ns, "added_by": added_by}
    return ADD_DOMAIN + repo_id.encode("ascii") + b"\n" + dumps_canonical(body)


def endorse(
    repo_id: str, name: str, public: PublicKey, added_ns: int, added_by: str, endorser: CommitSigner
) -> TrustedSigner:
    """A new entry for (name, public), signed by ``endorser`` (the new key itself for the root)."""
    sig = endorser.sign(endorsement_message(repo_id, name, public, added_ns, added_by))
    return TrustedSigner(check_signer_name(name), public, added_ns, added_by, endorser.public.fingerprint, sig)


@dataclass
class TrustedSet:
    generation: int = 0
    signers: list[TrustedSigner] = field(default_factory=list)

    def encode(self) -> bytes:
        return dumps_canonical(
            {"format": FORMAT, "generation": self.generation, "signers": [s.record() for s in self.signers]}
        )

    @classmethod
    def decode(cls, data: bytes) -> TrustedSet:
        obj = loads_record(data, "trusted signers")
        try:
            if obj["format"] != FORMAT:
                raise IntegrityError("unsupported trusted-signers format")
            out = []
            for s in obj["signers"]:
                out.append(
                    TrustedSigner(
                        name=str(s["name"]),
                        public=PublicKey(str(s["alg"]), bytes.fromhex(s["public"])),
                        added_ns=int(s["added_ns"]),
                        added_by=str(s["added_by"]),
                        endorser=str(s["endorser"]),
                        endorsement=bytes.fromhex(s["endorsement"]),
                        revoked_ns=int(s["revoked_ns"]),
                        revoked_by=str(s["revoked_by"]),
                    )
                )
            trusted = cls(int(obj["generation"]), out)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, InputError):
            raise IntegrityError("the trusted signers are malformed") from None
        if len({s.fingerprint for s in out}) != len(out):
            # `signer add` never lists a key twice; a copy before a revoked entry would hide the revocation.
            raise IntegrityError("the trusted signers list a key twice")
        return trusted

    def by_fingerprint(self, fingerprint: str) -> TrustedSigner | None:
        return next((s for s in self.signers if s.fingerprint == fingerprint), None)

    def active(self, name: str) -> TrustedSigner | None:
        """The unrevoked entry of ``name``, if any (a name has at most one)."""
        return next((s for s in self.signers if s.name == name and not s.revoked), None)

    def chain(self, repo_id: str) -> dict[str, str | None]:
        """Fingerprint → None when the entry chains to the root, else why not. The first entry is the root
        and must endorse itself; every later one must be endorsed by an earlier entry that chains, and that
        was not revoked before the endorsement."""
        verdict: dict[str, str | None] = {}
        for i, s in enumerate(self.signers):
            message = endorsement_message(repo_id, s.name, s.public, s.added_ns, s.added_by)
            if i == 0:
                ok = s.endorser == s.fingerprint and s.public.verify(message, s.endorsement)
                verdict[s.fingerprint] = None if ok else "the root entry's self-endorsement does not verify"
                continue
            endorser = next((e for e in self.signers[:i] if e.fingerprint == s.endorser), None)
            if endorser is None or verdict.get(endorser.fingerprint) is not None or endorser is s:
                verdict.setdefault(s.fingerprint, "not endorsed by a trusted signer")
            elif endorser.revoked and endorser.revoked_ns <= s.added_ns:
                verdict.setdefault(s.fingerprint, f"endorsed by {endorser.name} after it was revoked")
            elif not endorser.public.verify(message, s.endorsement):
                verdict.setdefault(s.fingerprint, f"its endorsement by {endorser.name} does not verify")
            else:
                verdict.setdefault(s.fingerprint, None)
        return verdict


@dataclass(frozen=True)
class SignatureStatus:
    status: str
    signer: str  # the name the trusted set gives the key, else the name the signature claims
    fingerprint: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == VALID


def signature_status(
    repo_id: str, commit: Commit, trusted: TrustedSet, chain: dict[str, str | None]
) -> SignatureStatus:
    sig = commit.signature
    if sig is None:
        return SignatureStatus(UNSIGNED, "", "", "the version carries no signature")
    entry = trusted.by_fingerprint(sig.fingerprint)
    if entry is None:
        return SignatureStatus(UNTRUSTED, sig.signer, sig.fingerprint, f"key {sig.fingerprint} is not trusted")
    if entry.alg != sig.alg or not entry.public.verify(commit_signing_message(repo_id, commit), sig.value):
        return SignatureStatus(INVALID, entry.name, sig.fingerprint, "the signature does not verify")
    why = chain.get(entry.fingerprint, "not in the trusted set")
    if why is not None:
        return SignatureStatus(UNTRUSTED, entry.name, sig.fingerprint, why)
    if entry.revoked:
        return SignatureStatus(
            REVOKED, entry.name, sig.fingerprint, f"signer {entry.name} was revoked by {entry.revoked_by}"
        )
    return SignatureStatus(VALID, entry.name, sig.fingerprint, "")


def seal_signers(sealer: Sealer, repo_ctx: bytes, trusted: TrustedSet) -> bytes:
    return sealer.seal(trusted.encode(), ObjectKind.SIGNERS, repo_ctx)


def open_signers(sealer: Sealer, repo_ctx: bytes, data: bytes) -> TrustedSet:
    return TrustedSet.decode(sealer.open(data, ObjectKind.SIGNERS, repo_ctx))
