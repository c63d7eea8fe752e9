#![cfg(loom)]
//! Model checks of cancellation tokens: a child made while its parent is being
//! cancelled, and a thread waiting on a child, must both see the cancel (a child that
//! slipped through would keep a race or a run going; a missed wake-up would leave the
//! waiter asleep, which loom reports as a deadlock, since its `wait_timeout` never
//! times out).
//!
//! With the `mutant_cancel_unlocked` feature (`child` reads the parent's flag before
//! taking the child-list lock), a cancel can store the flag and take the list between
//! that read and the push: every model here then finds a token that missed a cancel.

use fanout::CancelToken;
use fanout_loom_tests::{Bound, model};
use loom::thread;
use std::time::Duration;

/// The parent is cancelled on another thread while the main thread makes a child and
/// a grandchild; a third thread waits on the first child.
#[test]
fn children_made_during_a_cancel_are_cancelled() {
    model("cancel::children_made_during_a_cancel_are_cancelled", Bound::Exactly(3), None, || {
        let parent = CancelToken::new();
        let child = parent.child();
        let waiter = {
            let child = child.clone();
            thread::spawn(move || assert!(child.wait_timeout(Duration::from_secs(3600)), "the wait saw no cancel"))
        };
        let canceller = {
            let parent = parent.clone();
            thread::spawn(move || parent.cancel())
        };
        let late_child = parent.child();
        let grandchild = child.child();
        canceller.join().unwrap();
        waiter.join().unwrap();
        for (name, token) in [("child", &child), ("late child", &late_child), ("grandchild", &grandchild)] {
            assert!(token.is_cancelled(), "the {name} missed its parent's cancel");
        }
    });
}

/// Cancelling a child leaves its parent and siblings alone.
#[test]
fn a_child_cancel_stays_below() {
    model("cancel::a_child_cancel_stays_below", Bound::Exactly(3), None, || {
        let parent = CancelToken::new();
        let (a, b) = (parent.child(), parent.child());
        let t = {
            let a = a.clone();
            thread::spawn(move || a.cancel())
        };
        let a2 = a.child();
        t.join().unwrap();
        assert!(a.is_cancelled() && a2.is_cancelled());
        assert!(!parent.is_cancelled() && !b.is_cancelled(), "a child's cancel went up or sideways");
    });
}

/// A middle token nobody holds is tidied out of its parent's list (its child moves up)
/// while the parent is being cancelled: the grandchild must still be cancelled, and
/// the chain dropped once, whichever thread lets go of it last.
#[test]
fn tidying_an_unheld_child_during_a_cancel() {
    model("cancel::tidying_an_unheld_child_during_a_cancel", Bound::Exactly(3), None, || {
        let parent = CancelToken::new();
        let grandchild = parent.child().child();
        let canceller = {
            let parent = parent.clone();
            thread::spawn(move || parent.cancel())
        };
        let sibling = parent.child();
        let watcher = {
            let grandchild = grandchild.clone();
            thread::spawn(move || assert!(grandchild.wait_timeout(Duration::from_secs(3600)), "no cancel seen"))
        };
        canceller.join().unwrap();
        drop(parent);
        watcher.join().unwrap();
        assert!(grandchild.is_cancelled() && sibling.is_cancelled(), "the cancel missed a token");
    });
}
