//! The multi-producer multi-consumer ring (Vyukov cells). Being written.
