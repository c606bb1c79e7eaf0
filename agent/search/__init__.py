"""Search by picture: image databases (seed 003) and, later, the box's shared vector index."""
