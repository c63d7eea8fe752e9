//! Follow-on runs: one closure over items of one type, which may push more items of
//! the run through its [`Ctx`].

use crate::engine::ctx::Ctx;
use crate::engine::work::Work;
use crate::work::failure::{Failure, Fault};
use std::marker::PhantomData;

/// A follow-on run: one closure over items of one type, which may push more.
pub(crate) struct FollowOn<T, F> {
    pub(crate) f: F,
    pub(crate) _item: PhantomData<fn(T)>,
}

impl<T: Send, F: Fn(T, &mut Ctx<'_, T>) + Sync> Work for FollowOn<T, F> {
    type Item = T;
    type Acc = ();
    const FOLLOW_ON: bool = true;
    fn new_acc(&self) {}
    #[inline(always)]
    fn execute(&self, item: T, ctx: &mut Ctx<'_, T>, _acc: &mut ()) {
        (self.f)(item, ctx)
    }
}

/// A fallible follow-on run with a per-thread accumulator (`()` for `try_run`). Panics
/// are caught by the engine (follow-on items have no index to report).
pub(crate) struct TryRunFold<T, E, Id, F> {
    pub(crate) identity: Id,
    pub(crate) f: F,
    pub(crate) failure: Failure<E>,
    pub(crate) _item: PhantomData<fn(T)>,
}

impl<T, A, E, Id, F> Work for TryRunFold<T, E, Id, F>
where
    T: Send,
    A: Send,
    E: Send,
    Id: Fn() -> A + Sync,
    F: Fn(&mut A, T, &mut Ctx<'_, T>) -> Result<(), E> + Sync,
{
    type Item = T;
    type Acc = A;
    const FOLLOW_ON: bool = true;
    fn new_acc(&self) -> A {
        (self.identity)()
    }
    #[inline(always)]
    fn execute(&self, item: T, ctx: &mut Ctx<'_, T>, acc: &mut A) {
        if let Err(e) = (self.f)(acc, item, ctx) {
            self.failure.record(ctx, Fault::Error(e), None);
        }
    }
}
