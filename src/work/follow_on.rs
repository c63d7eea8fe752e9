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

/// The in-place form the engine runs (`TryRunFold`'s) of a fold `f` that takes the
/// accumulator and returns it, as the public `run_fold` and `try_run_fold` take it: each
/// thread's accumulator is an `Option`, started from `identity()` at its first item (so
/// inside the engine's per-item `catch_unwind`, like the task). After an error the
/// thread's accumulator is gone, which is fine: the run's result is that error.
pub(crate) fn fold_in_place<'f, A, T, E>(
    identity: &'f (impl Fn() -> A + Sync),
    f: &'f (impl Fn(A, T, &mut Ctx<'_, T>) -> Result<A, E> + Sync),
) -> impl Fn(&mut Option<A>, T, &mut Ctx<'_, T>) -> Result<(), E> + Sync + 'f {
    move |acc, item, ctx| {
        let current = acc.take().unwrap_or_else(identity);
        *acc = Some(f(current, item, ctx)?);
        Ok(())
    }
}
