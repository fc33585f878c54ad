"""Fixtures for unit tests: sealers over fresh random keys (no repository, no disk)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from strongroom.crypto.aead import Sealer
from strongroom.crypto.secret import Secret
from strongroom.store import filecache, index

MakeSealer = Callable[..., Sealer]


@pytest.fixture
def make_sealer() -> MakeSealer:
    """make_sealer(n_keys=1, current=None, keys=None) → a Sealer; keys maps key id → Secret."""

    def make(n_keys: int = 1, current: int | None = None, keys: dict[int, Secret] | None = None) -> Sealer:
        keys = keys if keys is not None else {i: Secret(os.urandom(32)) for i in range(1, n_keys + 1)}
        return Sealer(keys, current if current is not None else max(keys))

    return make


@pytest.fixture
def sealer(make_sealer: MakeSealer) -> Sealer:
    return make_sealer()


@pytest.fixture
def ctx() -> bytes:
    """A repository context (its 32-byte id)."""
    return os.urandom(32)


@pytest.fixture
def kept_parses() -> Iterator[None]:
    """As in the agent (service.context.keep_warm): parsed index files and file caches are kept between loads."""
    index.keep_parsed_files()
    filecache.keep_loaded()
    try:
        yield
    finally:
        index._parsed = None
        filecache._loaded = None
