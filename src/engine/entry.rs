//! The entry point of every run: how a pool runs one [`Work`] with its caller taking
//! part, from building the run to handing back its outcome.

use super::run::{Control, Outcome, Run};
use super::seeds::Seeds;
use super::work::Work;
use crate::outcome::panics::drop_each_quietly;
use crate::pool::Pool;
use crate::pool::registry::Registered;
use crate::stats::RunStats;
use std::panic::resume_unwind;

impl Pool {
    /// Runs `work` to completion with the caller taking part; resumes a task's panic.
    pub(crate) fn run_work<W: Work>(
        &self,
        work: W,
        seeds: impl IntoIterator<Item = W::Item>,
    ) -> (Vec<W::Acc>, RunStats) {
        let Outcome { accs, stats, panic, .. } = self.run_work_under(work, Control::default(), seeds);
        if let Some(payload) = panic {
            // One at a time and quietly: a panicking accumulator `Drop` must neither
            // replace the task's panic nor, unwinding with it, abort the process.
            drop_each_quietly(accs);
            resume_unwind(payload);
        }
        (accs, stats)
    }

    /// Like `run_work`, under `control`, handing a panic back instead of resuming it.
    pub(crate) fn run_work_under<W: Work>(
        &self,
        work: W,
        control: Control<'_>,
        seeds: impl IntoIterator<Item = W::Item>,
    ) -> Outcome<W::Acc> {
        let shared = self.shared();
        // The caller takes a worker's seat on a pool with a worker per core (else three
        // threads would share two cores). Not in a nested run: the caller is then a
        // worker of this pool, already one of its threads.
        let nested = self.current_thread_index().is_some();
        let caller_holds_a_core = shared.one_per_core() && !nested;
        let share_seeds = control.share_seeds;
        let mut seeds = Seeds::new(seeds.into_iter());
        let run = Run::new(work, shared, caller_holds_a_core, control, &mut seeds);
        // SAFETY: `registered` is dropped before `run` is consumed (the borrow checker
        // sees to that) or by unwinding, and never leaked.
        let registered = unsafe { Registered::new(&run) };
        if share_seeds {
            // No more sleepers than there are seeds (all in the shared queue by now).
            run.wake_for_shared_seeds((shared.threads() as u64).min(seeds.pulled()));
        }
        run.run_as_caller(&mut seeds);
        // Withdraws the run: no worker joins it after this, and those that joined have
        // left.
        drop(registered);
        let mut outcome = run.into_outcome(seeds);
        outcome.stats.pinned_workers = self.pinned_workers();
        outcome
    }
}
