"""privfed: privacy-preserving multi-task federated learning research framework."""

from __future__ import annotations

__version__ = "0.1.0"

from privfed.errors import PrivfedError

__all__ = ["PrivfedError", "__version__"]
