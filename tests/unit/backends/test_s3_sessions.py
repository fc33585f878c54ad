"""The S3 backend keeps one boto3 session per process, and a session keeps the credentials it resolved.
The agent runs many commands in one process, each with its own environment: between them it forgets the
sessions, so that one command's credentials never serve the next."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.backends import s3
from strongroom.service.context import between_commands


def _key(client: object) -> str:
    return str(client._request_signer._credentials.access_key)  # type: ignore[attr-defined]


def test_a_command_after_between_commands_uses_its_own_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    between_commands()  # what earlier tests in this process left cached
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA_ALICE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "alice-secret")
    assert _key(s3._new_client(region_name="us-east-1")) == "AKIA_ALICE"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA_BOB")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bob-secret")
    assert _key(s3._new_client(region_name="us-east-1")) == "AKIA_ALICE"  # what the cached session keeps
    between_commands()
    assert _key(s3._new_client(region_name="us-east-1")) == "AKIA_BOB"
