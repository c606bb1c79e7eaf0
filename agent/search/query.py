"""What the analytics give back for a query picture: the vector of its largest target and how many there were.

The API (SearchTarget by picture, and later image databases and picture-search jobs) needs both: the vector to
search with, and the count to tell the caller that a picture with several faces was searched with the largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueryVector:
    """``vector``: the embedding (float32) of the largest target found; ``found``: how many were found;
    ``box``: that target's (left, top, right, bottom) in the picture's pixels."""

    vector: Any
    found: int
    box: tuple[int, int, int, int]
