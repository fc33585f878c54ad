"""strongroom: encrypted, deduplicated, versioned storage for ML training data, with provenance.

The library API is the service layer (the CLI calls the same functions); see docs/api.md.
"""

from __future__ import annotations

from strongroom.errors import (
    BranchMoved,
    InputError,
    IntegrityError,
    ProblemFound,
    RollbackDetected,
    StrongroomError,
    WrongPassphrase,
)

TYPE_CHECKING = False  # typing is not imported here: the agent's client imports this package on every run
if TYPE_CHECKING:
    from typing import Any

    from strongroom.service.api import Strongroom

__version__ = "0.2.0"

__all__ = [
    "BranchMoved",
    "InputError",
    "IntegrityError",
    "ProblemFound",
    "RollbackDetected",
    "Strongroom",
    "StrongroomError",
    "WrongPassphrase",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The library API is imported on first use: the CLI imports only the service modules its command needs.
    if name == "Strongroom":
        from strongroom.service.api import Strongroom

        return Strongroom
    raise AttributeError(f"module 'strongroom' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Strongroom"})
