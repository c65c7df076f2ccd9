#![cfg(shmq_loom)]
