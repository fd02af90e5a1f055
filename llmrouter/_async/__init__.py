"""The I/O layer, written once with async/await; ``_sync/`` is generated from it."""
