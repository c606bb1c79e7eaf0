"""Bundled ONNX models, their source packages' licences, and ``convert.py`` that rebuilds them."""
