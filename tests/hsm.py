"""SoftHSM2 as a real PKCS#11 token: a token initialised in a temporary folder, one per test process.

``make test`` installs SoftHSM2 when missing (scripts/ensure-softhsm.sh). Under CI=true a missing SoftHSM2
fails the tests that need it; elsewhere they skip with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.crypto import hsm

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
PIN = "40718-test-pin"
SO_PIN = "99120-so-pin"


@dataclass(frozen=True)
class SoftHsm:
    module: str
    token: str
    pin: str
    conf: str

    @property
    def env(self) -> dict[str, str]:
        """What a strongroom subprocess needs to reach the token (the PIN included)."""
        return {"SOFTHSM2_CONF": self.conf, "STRONGROOM_PKCS11_PIN": self.pin}

    def kek_args(self, label: str) -> list[str]:
        return [
            "--pkcs11-module", self.module, "--pkcs11-token", self.token, "--pkcs11-key-label", label,
        ]  # fmt: skip


def _module() -> str | None:
    return next((m for m in MODULES if os.path.exists(m)), None)


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"SoftHSM2 is required under CI: {reason}")
    pytest.skip(reason)


_made: list[SoftHsm] = []  # one token per process: the PKCS#11 library reads its configuration only once


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    if _made:
        yield _made[0]
        return
    module = _module()
    if module is None or shutil.which("softhsm2-util") is None:
        unavailable("SoftHSM2 is not installed (scripts/ensure-softhsm.sh installs it)")
    assert module is not None
    root = Path(tmp_path_factory.mktemp("softhsm"))
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    token = f"sr-test-{secrets.token_hex(4)}"
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", token, "--pin", PIN, "--so-pin", SO_PIN],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    # The PKCS#11 library reads SOFTHSM2_CONF once, when it is first loaded in this process.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm.approve([module])  # as the user's --pkcs11-module or STRONGROOM_PKCS11_MODULES would, for in-process tests
    _made.append(SoftHsm(module, token, PIN, str(conf)))
    yield _made[0]


def unique_label(prefix: str = "kek") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"
