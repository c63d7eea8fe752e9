//! Helpers shared by the unit tests.

use std::cell::Cell;
use std::rc::Rc;

/// Counts its drops in a shared counter: checks that nothing is lost or dropped twice.
pub(crate) struct Counted(pub(crate) Rc<Cell<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}
