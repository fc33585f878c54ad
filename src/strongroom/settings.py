"""Settings: the only module that reads the environment. Everything below gets explicit parameters.

STRONGROOM_REPO                 repository folder (or --repo)
STRONGROOM_PASSPHRASE_FILE      file whose first line is the passphrase
STRONGROOM_PASSPHRASE           the passphrase itself (least safe: other processes may read it)
STRONGROOM_NEW_PASSPHRASE_FILE  the new passphrase for key change-passphrase / add-kek (else a prompt)
STRONGROOM_NEW_PASSPHRASE       the same, least safe
STRONGROOM_PKCS11_PIN           the PIN of the PKCS#11 token holding a KEK (else a prompt)
STRONGROOM_KEYFILE              the key file to open a slot with instead of the path its keyfile KEK recorded
STRONGROOM_PKCS11_MODULES       PKCS#11 modules (.so) this machine may load, separated by ':' (besides those
                                named with --pkcs11-module here, remembered in <config dir>/pkcs11-modules)
STRONGROOM_KEYSTORE             scope KEKs (never in a repository); default ~/.local/share/strongroom/keystore
STRONGROOM_USER                 the actor recorded on versions
STRONGROOM_STATE_DIR            client state (rollback detection), logs; default ~/.local/state/strongroom
STRONGROOM_CACHE_DIR            file cache; default ~/.cache/strongroom
STRONGROOM_CONFIG_DIR           the user's configuration (signing keys in signers/); default
                                $XDG_CONFIG_HOME/strongroom, else ~/.config/strongroom
STRONGROOM_SIGNING_PASSPHRASE_FILE  file whose first line is the passphrase of the user's signing key; when
                                neither this nor the next is set, the repository passphrase source is used
STRONGROOM_SIGNING_PASSPHRASE   the same, least safe
STRONGROOM_CATALOG              catalog database, an SQLAlchemy URL (or --catalog); default an SQLite file
                                <state dir>/catalogs/<repository id>.sqlite
STRONGROOM_UNSAFE_TEST_WEAK_KDF=1   test suite only: weak Argon2 parameters for new repositories
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from strongroom.errors import UndecodableText, UnsafeSwitchRefused

WEAK_KDF_SWITCH = "STRONGROOM_UNSAFE_TEST_WEAK_KDF"


@dataclass(frozen=True)
class Settings:
    repo: str | None
    passphrase_file: str | None
    passphrase_env: str | None
    passphrase_command: str | None
    user: str | None
    os_user: str
    state_dir: str
    cache_dir: str
    unsafe_weak_kdf: bool
    interactive: bool
    catalog: str | None = None
    new_passphrase_file: str | None = None
    new_passphrase_env: str | None = None
    pkcs11_pin: str | None = None
    keyfile: str | None = None
    config_dir: str = ""
    signing_passphrase_file: str | None = None
    signing_passphrase_env: str | None = None
    keystore: str = ""
    pkcs11_modules: tuple[str, ...] = ()

    @property
    def signers_dir(self) -> str:
        """The user's signing keys: outside every repository."""
        return os.path.join(self.config_dir, "signers")

    def __repr__(self) -> str:
        return f"Settings(repo={self.repo!r}, user={self.user!r}, state_dir={self.state_dir!r})"

    def catalog_url(self, repo_id: str) -> str:
        """The catalog of one repository: the configured URL, or an SQLite file in the state folder."""
        if self.catalog:
            return self.catalog
        return "sqlite:///" + os.path.join(os.path.abspath(self.state_dir), "catalogs", f"{repo_id}.sqlite")

    @property
    def pkcs11_modules_file(self) -> str:
        """The PKCS#11 modules the user named here with --pkcs11-module, one path a line."""
        return os.path.join(self.config_dir, "pkcs11-modules")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.state_dir, "logs")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        repo: str | None = None,
        passphrase_command: str | None = None,
        catalog: str | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        home = env.get("HOME") or os.path.expanduser("~")
        weak = env.get(WEAK_KDF_SWITCH) == "1"
        if weak and "PYTEST_CURRENT_TEST" not in env and "pytest" not in sys.modules:
            raise UnsafeSwitchRefused(f"{WEAK_KDF_SWITCH} is for strongroom's own test suite only; unset it")
        try:
            os_user = getpass.getuser()
        except (KeyError, OSError):
            os_user = str(os.getuid())
        state = env.get("STRONGROOM_STATE_DIR") or os.path.join(
            env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state"), "strongroom"
        )
        cache = env.get("STRONGROOM_CACHE_DIR") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "strongroom"
        )
        config = env.get("STRONGROOM_CONFIG_DIR") or os.path.join(
            env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "strongroom"
        )
        user = env.get("STRONGROOM_USER") or None
        if user is not None:  # recorded on versions and in the audit log: refused before anything is done
            UndecodableText.check(user, "STRONGROOM_USER")
        return cls(
            repo=repo or env.get("STRONGROOM_REPO") or None,
            passphrase_file=env.get("STRONGROOM_PASSPHRASE_FILE") or None,
            passphrase_env=env.get("STRONGROOM_PASSPHRASE"),
            passphrase_command=passphrase_command,
            user=user,
            os_user=os_user,
            state_dir=state,
            cache_dir=cache,
            unsafe_weak_kdf=weak,
            interactive=sys.stdin.isatty(),
            catalog=catalog or env.get("STRONGROOM_CATALOG") or None,
            new_passphrase_file=env.get("STRONGROOM_NEW_PASSPHRASE_FILE") or None,
            new_passphrase_env=env.get("STRONGROOM_NEW_PASSPHRASE"),
            pkcs11_pin=env.get("STRONGROOM_PKCS11_PIN"),
            keyfile=env.get("STRONGROOM_KEYFILE") or None,
            pkcs11_modules=tuple(m for m in env.get("STRONGROOM_PKCS11_MODULES", "").split(os.pathsep) if m),
            config_dir=config,
            signing_passphrase_file=env.get("STRONGROOM_SIGNING_PASSPHRASE_FILE") or None,
            signing_passphrase_env=env.get("STRONGROOM_SIGNING_PASSPHRASE"),
            keystore=env.get("STRONGROOM_KEYSTORE")
            or os.path.join(
                env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "strongroom", "keystore"
            ),
        )
