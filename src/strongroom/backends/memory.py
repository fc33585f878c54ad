"""A dict-backed store for unit tests and dry runs."""

from __future__ import annotations

from collections.abc import Iterator

from strongroom.backends.base import ObjectMissing, validate_name


class MemoryBackend:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def describe(self) -> str:
        return "memory"

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.objects[validate_name(name)] = bytes(data)

    def put_exclusive(self, name: str, data: bytes) -> bool:
        if validate_name(name) in self.objects:
            return False
        self.objects[name] = bytes(data)
        return True

    def get(self, name: str) -> bytes:
        try:
            return self.objects[validate_name(name)]
        except KeyError:
            raise ObjectMissing(name) from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.get(name)[offset : offset + length]

    def size(self, name: str) -> int | None:
        data = self.objects.get(validate_name(name))
        return None if data is None else len(data)

    def delete(self, name: str) -> None:
        self.objects.pop(validate_name(name), None)

    def folder_stamps(self, prefix: str) -> dict[str, int] | None:
        return None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for name in sorted(self.objects):
            if name == prefix or name.startswith(prefix.rstrip("/") + "/"):
                try:
                    validate_name(name)
                except ValueError:
                    continue  # no crap out: whatever did not come in through put()
                yield name, len(self.objects[name])
