//! Multi-producer multi-consumer channels. Being written.
