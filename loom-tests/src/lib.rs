//! Loom models of nimgo's cross-thread protocols: see README.md.
