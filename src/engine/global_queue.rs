//! The run's global queue: seeds that do not fit anywhere else and overflow from full
//! deques. It is `crossbeam_deque::Injector`, except under `cfg(loom)`: loom cannot see
//! inside crossbeam's atomics, so the model uses a loom-visible mutex-protected queue
//! with the same interface in its place. That keeps the deque, termination and sleep
//! protocols under the model; the injector's own correctness is crossbeam's to prove.
//!
//! The injector is made on the first push: most runs never use their global or urgent
//! queue, and an injector allocates (and zeroes) a block as soon as it exists.

#[cfg(not(loom))]
mod imp {
    use crossbeam_deque::{Injector, Steal};
    use std::sync::OnceLock;

    /// A multi-producer multi-consumer FIFO queue.
    ///
    /// A reader that does not see the injector yet sees an empty queue, which is what
    /// it would see of the injector itself: the `OnceLock` makes its creation visible to
    /// every thread that sees a push (creation is sequenced before the push), and a push
    /// not yet visible is not visible either way.
    pub(crate) struct GlobalQueue<T>(OnceLock<Injector<T>>);

    impl<T> GlobalQueue<T> {
        pub(crate) fn new() -> Self {
            Self(OnceLock::new())
        }

        pub(crate) fn push(&self, item: T) {
            self.0.get_or_init(Injector::new).push(item);
        }

        /// Takes the oldest item, retrying through lost races.
        pub(crate) fn pop(&self) -> Option<T> {
            let queue = self.0.get()?;
            loop {
                match queue.steal() {
                    Steal::Success(t) => return Some(t),
                    Steal::Empty => return None,
                    Steal::Retry => crate::sync::spin_hint(),
                }
            }
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.0.get().is_none_or(Injector::is_empty)
        }
    }
}

#[cfg(loom)]
mod imp {
    use crate::sync::{Mutex, lock};
    use std::collections::VecDeque;

    /// Loom stand-in for `crossbeam_deque::Injector` (see the module docs).
    pub(crate) struct GlobalQueue<T>(Mutex<VecDeque<T>>);

    impl<T> GlobalQueue<T> {
        pub(crate) fn new() -> Self {
            Self(Mutex::new(VecDeque::new()))
        }

        pub(crate) fn push(&self, item: T) {
            lock(&self.0).push_back(item);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.0).pop_front()
        }

        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.0).is_empty()
        }
    }
}

pub(crate) use imp::GlobalQueue;
