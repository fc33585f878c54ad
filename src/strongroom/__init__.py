"""strongroom: encrypted, deduplicated, versioned storage for ML training data, with provenance.

The library API is the service layer (the CLI calls the same functions); see docs/api.md.
"""

from strongroom.errors import (
    BranchMoved,
    InputError,
    IntegrityError,
    ProblemFound,
    RollbackDetected,
    StrongroomError,
    WrongPassphrase,
)
from strongroom.service.api import Strongroom

__version__ = "0.1.0"

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
