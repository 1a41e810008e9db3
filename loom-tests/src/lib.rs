//! loom models of the engine's concurrent structures; see `tests/`.
