//! Ring protocols. One module per flavour; `record` and `memory` are shared by all.

pub mod intent;
pub mod memory;
pub mod mpmc;
pub mod mpsc;
pub mod record;
pub mod spsc;
