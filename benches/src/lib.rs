//! Shared code for the engine benches.
