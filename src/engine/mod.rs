//! The run engine: one typed fan-out with its caller and the pool's workers taking
//! part. `entry` is where every run starts, `run` the run itself, `participant` each
//! thread's part in it, from the per-item loop to going idle.

mod active;
pub(crate) mod cadence;
pub(crate) mod ctx;
mod entry;
pub(crate) mod global_queue;
mod participant;
pub(crate) mod run;
pub(crate) mod seats;
pub(crate) mod seeds;
pub(crate) mod share;
pub(crate) mod stack;
pub(crate) mod stop;
pub(crate) mod work;
