//! Helpers for what most plugins do. Nothing here crosses the binary interface.
