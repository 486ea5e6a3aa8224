"""How the store's values are read and written: Redis replies as text or bytes, float64 arrays as little-endian bytes."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def reply_text(value: object) -> str:
    """A Redis reply as text (the client answers bytes; its type hints allow str and more)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string reply, got {type(value).__name__}")


def reply_bytes(value: object) -> bytes:
    """A Redis reply as bytes (see :func:`reply_text`)."""
    return value if isinstance(value, bytes) else reply_text(value).encode()


def float64_bytes(a: NDArray[np.float64]) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def float64_array(data: bytes, shape: tuple[int, ...]) -> NDArray[np.float64]:
    return np.frombuffer(data, dtype="<f8").astype(np.float64).reshape(shape)
