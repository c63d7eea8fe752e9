//! Jobserver tokens for a pool's workers (`PoolBuilder::jobserver`): a worker holds a
//! token from the moment it joins runs until it goes to sleep, so under `make -jN` or
//! cargo the processes together never run more threads than the jobserver allows.
//!
//! A worker first tries to take a token without blocking (one read on the jobserver's
//! pipe). If none is free it asks the jobserver crate's helper thread for one and
//! waits on a condvar here; the helper's callback hands the token over, or gives it
//! straight back if nobody waits for it any more. Dropping the pool closes the state,
//! which wakes every waiter.

use crate::sync::{Arc, Condvar, Mutex, lock, wait};
use jobserver::{Acquired, Client, HelperThread};
use std::io;

/// The pool's side of a jobserver.
pub(crate) struct Tokens {
    client: Client,
    state: Arc<State>,
    /// The thread that blocks on the jobserver on the workers' behalf. Dropped (and
    /// joined) after the workers, in `Pool::drop`.
    helper: HelperThread,
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    handed: Condvar,
}

#[derive(Default)]
struct Inner {
    /// Tokens the helper acquired for waiters that have not taken them yet.
    spare: Vec<Acquired>,
    /// Workers in `wait`.
    waiting: usize,
    /// Requests made to the helper and not yet answered.
    requested: usize,
    /// The pool is shutting down: waiters return empty-handed.
    closed: bool,
    /// The jobserver failed; workers then run without tokens (see `wait`).
    failed: bool,
}

/// What a worker holds while it may work.
pub(crate) enum Token {
    /// One of the jobserver's tokens, given back when dropped.
    Held(#[allow(dead_code)] Acquired),
    /// The jobserver failed; the worker works without one.
    Unlimited,
}

impl Tokens {
    pub(crate) fn new(client: Client) -> io::Result<Tokens> {
        let state = Arc::new(State::default());
        let answer = state.clone();
        let helper = client.clone().into_helper_thread(move |token| {
            let mut inner = lock(&answer.inner);
            inner.requested = inner.requested.saturating_sub(1);
            match token {
                Ok(token) if inner.waiting > inner.spare.len() && !inner.closed => {
                    inner.spare.push(token);
                    answer.handed.notify_one();
                }
                // Nobody waits for it any more: give it back at once (by dropping it).
                Ok(token) => drop(token),
                Err(_) => {
                    inner.failed = true;
                    answer.handed.notify_all();
                }
            }
        })?;
        Ok(Tokens { client, state, helper })
    }

    /// A token for a worker that found work, or `None` if the pool is shutting down.
    /// Blocks until one is free.
    pub(crate) fn wait(&self) -> Option<Token> {
        if let Ok(Some(token)) = self.client.try_acquire() {
            return Some(Token::Held(token));
        }
        let mut inner = lock(&self.state.inner);
        inner.waiting += 1;
        let token = loop {
            if let Some(token) = inner.spare.pop() {
                break Some(Token::Held(token));
            }
            if inner.closed {
                break None;
            }
            if inner.failed {
                break Some(Token::Unlimited);
            }
            // One request outstanding per waiter; an answer nobody waits for is given
            // back by the helper's callback.
            if inner.requested < inner.waiting {
                inner.requested += 1;
                self.helper.request_token();
            }
            inner = wait(&self.state.handed, inner);
        };
        inner.waiting -= 1;
        token
    }

    /// Wakes every waiter empty-handed and gives the spare tokens back; called when the
    /// pool shuts down, before its workers are joined.
    pub(crate) fn close(&self) {
        let mut inner = lock(&self.state.inner);
        inner.closed = true;
        inner.spare.clear();
        self.state.handed.notify_all();
    }
}
