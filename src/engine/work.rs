//! The seam between the engine and the kinds of work: what a run does with each item.

use super::ctx::Ctx;

/// What a run does with each item. Implemented for follow-on runs and for the
/// index-range runs behind `for_each`, `map` and `fold`.
pub(crate) trait Work: Sync {
    /// The item type of the run.
    type Item: Send;
    /// Per-participant state, created on first use and handed back at the end.
    type Acc: Send;
    /// A fresh accumulator.
    fn new_acc(&self) -> Self::Acc;
    /// Whether items come from `Ctx::push` (so `executed - seeds` is the follow-on count).
    const FOLLOW_ON: bool = false;
    /// Executes one item.
    fn execute(&self, item: Self::Item, ctx: &mut Ctx<'_, Self::Item>, acc: &mut Self::Acc);
}

/// A borrowed work runs like the work itself, so callers can read the work's own state
/// (say, its first failure) after the run.
impl<W: Work> Work for &W {
    type Item = W::Item;
    type Acc = W::Acc;
    const FOLLOW_ON: bool = W::FOLLOW_ON;
    fn new_acc(&self) -> Self::Acc {
        (**self).new_acc()
    }
    #[inline(always)]
    fn execute(&self, item: Self::Item, ctx: &mut Ctx<'_, Self::Item>, acc: &mut Self::Acc) {
        (**self).execute(item, ctx, acc)
    }
}
