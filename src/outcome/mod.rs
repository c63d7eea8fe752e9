//! What a run hands back besides its values: the public errors, and the handling of
//! panics and of values whose `Drop` may panic.

pub(crate) mod error;
pub(crate) mod panics;
