"""The storage tests' real JPEGs (insightface group photo) for the store-index tests."""

from tests.storage.conftest import jpegs

__all__ = ["jpegs"]
