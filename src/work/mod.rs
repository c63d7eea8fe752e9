//! The kinds of work a run can do, each a [`Work`](crate::engine::work::Work): follow-on
//! items, index ranges, and follow-on runs whose values come back in tree order; and
//! the first failure of a fallible one.

pub(crate) mod collect;
pub(crate) mod failure;
pub(crate) mod follow_on;
pub(crate) mod range;
