//! The stages of a stream, fused into one push-based function per batch.
//!
//! Every stage wraps the previous one, like iterator adapters do, so a chain of
//! `map`, `filter`, ... compiles into one monomorphized loop body: no `Box`, no `dyn`
//! call and no intermediate buffer per stage. An item is pushed through the chain
//! into a sink; a stage that drops the item (`filter`) simply does not call the sink,
//! one that expands it (`flat_map`) calls it several times.
//!
//! The error type `E` is a parameter of the trait rather than of the stages, so that
//! every infallible stage works in a stream of any error type, and the first
//! [`try_map`](super::Stream::try_map) decides it.

use super::gate::{Free, Gate, StageGate};
use std::marker::PhantomData;

mod sealed {
    pub trait Sealed {}
}

/// A chain of stages from the source's item type `In` to [`Pipe::Out`], failing with
/// `E`. Built by [`Stream`](super::Stream)'s stage methods; it cannot be implemented
/// outside this crate.
pub trait Pipe<In, E>: sealed::Sealed + Send + Sync {
    /// What the last stage produces.
    type Out: Send;

    /// Pushes `item` through the chain, calling `sink` for each output.
    #[doc(hidden)]
    fn push<S: FnMut(Self::Out) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E>;
}

/// The empty chain: items pass unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source;

impl sealed::Sealed for Source {}

impl<T: Send, E> Pipe<T, E> for Source {
    type Out = T;
    #[inline(always)]
    fn push<S: FnMut(T) -> Result<(), E>>(&self, item: T, sink: &mut S) -> Result<(), E> {
        sink(item)
    }
}

macro_rules! stage {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// `G` is [`Free`] or, after [`Stream::parallelism`](super::Stream::parallelism),
        /// the [`Gate`] that caps how many threads run the stage's function at once.
        pub struct $name<P, F, G = Free> {
            prev: P,
            f: F,
            gate: G,
        }

        impl<P, F> $name<P, F> {
            pub(super) fn new(prev: P, f: F) -> Self {
                Self { prev, f, gate: Free }
            }
        }

        impl<P, F, G> sealed::Sealed for $name<P, F, G> {}

        impl<P, F> Limit for $name<P, F> {
            type Limited = $name<P, F, Gate>;
            fn limit(self, gate: Gate) -> Self::Limited {
                $name { prev: self.prev, f: self.f, gate }
            }
        }

        impl<P, F, G> std::fmt::Debug for $name<P, F, G> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

/// A stage whose function can be given a parallelism limit (every stage, once; not
/// the bare source, which one thread pulls at a time anyway). Sealed.
pub trait Limit: sealed::Sealed {
    /// The same stage, with its function run through a [`Gate`].
    type Limited;
    #[doc(hidden)]
    fn limit(self, gate: Gate) -> Self::Limited;
}

stage!(
    /// The [`Stream::map`](super::Stream::map) stage.
    Map
);
stage!(
    /// The [`Stream::try_map`](super::Stream::try_map) stage.
    TryMap
);
stage!(
    /// The [`Stream::filter`](super::Stream::filter) stage.
    Filter
);
stage!(
    /// The [`Stream::filter_map`](super::Stream::filter_map) stage.
    FilterMap
);
stage!(
    /// The [`Stream::inspect`](super::Stream::inspect) stage.
    Inspect
);

impl<In, E, P, F, U, G: StageGate> Pipe<In, E> for Map<P, F, G>
where
    P: Pipe<In, E>,
    F: Fn(P::Out) -> U + Send + Sync,
    U: Send,
{
    type Out = U;
    #[inline(always)]
    fn push<S: FnMut(U) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E> {
        self.prev.push(item, &mut |x| sink(self.gate.run(|| (self.f)(x))))
    }
}

impl<In, E, P, F, U, G: StageGate> Pipe<In, E> for TryMap<P, F, G>
where
    P: Pipe<In, E>,
    F: Fn(P::Out) -> Result<U, E> + Send + Sync,
    U: Send,
{
    type Out = U;
    #[inline(always)]
    fn push<S: FnMut(U) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E> {
        self.prev.push(item, &mut |x| sink(self.gate.run(|| (self.f)(x))?))
    }
}

impl<In, E, P, F, G: StageGate> Pipe<In, E> for Filter<P, F, G>
where
    P: Pipe<In, E>,
    F: Fn(&P::Out) -> bool + Send + Sync,
{
    type Out = P::Out;
    #[inline(always)]
    fn push<S: FnMut(P::Out) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E> {
        self.prev.push(item, &mut |x| if self.gate.run(|| (self.f)(&x)) { sink(x) } else { Ok(()) })
    }
}

impl<In, E, P, F, U, G: StageGate> Pipe<In, E> for FilterMap<P, F, G>
where
    P: Pipe<In, E>,
    F: Fn(P::Out) -> Option<U> + Send + Sync,
    U: Send,
{
    type Out = U;
    #[inline(always)]
    fn push<S: FnMut(U) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E> {
        self.prev.push(item, &mut |x| match self.gate.run(|| (self.f)(x)) {
            Some(y) => sink(y),
            None => Ok(()),
        })
    }
}

impl<In, E, P, F, G: StageGate> Pipe<In, E> for Inspect<P, F, G>
where
    P: Pipe<In, E>,
    F: Fn(&P::Out) + Send + Sync,
{
    type Out = P::Out;
    #[inline(always)]
    fn push<S: FnMut(P::Out) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E> {
        self.prev.push(item, &mut |x| {
            self.gate.run(|| (self.f)(&x));
            sink(x)
        })
    }
}

/// The [`Stream::flat_map`](super::Stream::flat_map) stage.
///
/// `G` is [`Free`] or, after [`Stream::parallelism`](super::Stream::parallelism), the
/// [`Gate`] that caps how many threads call the stage's function at once (the gate
/// covers the call that makes the iterable, not the walk over it).
pub struct FlatMap<P, F, J, G = Free> {
    prev: P,
    f: F,
    gate: G,
    _out: PhantomData<fn() -> J>,
}

impl<P, F, J> FlatMap<P, F, J> {
    pub(super) fn new(prev: P, f: F) -> Self {
        Self { prev, f, gate: Free, _out: PhantomData }
    }
}

impl<P, F, J, G> sealed::Sealed for FlatMap<P, F, J, G> {}

impl<P, F, J> Limit for FlatMap<P, F, J> {
    type Limited = FlatMap<P, F, J, Gate>;
    fn limit(self, gate: Gate) -> Self::Limited {
        FlatMap { prev: self.prev, f: self.f, gate, _out: PhantomData }
    }
}

impl<P, F, J, G> std::fmt::Debug for FlatMap<P, F, J, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlatMap")
    }
}

impl<In, E, P, F, J, G: StageGate> Pipe<In, E> for FlatMap<P, F, J, G>
where
    P: Pipe<In, E>,
    F: Fn(P::Out) -> J + Send + Sync,
    J: IntoIterator,
    J::Item: Send,
{
    type Out = J::Item;
    #[inline(always)]
    fn push<S: FnMut(J::Item) -> Result<(), E>>(&self, item: In, sink: &mut S) -> Result<(), E> {
        self.prev.push(item, &mut |x| {
            for y in self.gate.run(|| (self.f)(x)) {
                sink(y)?;
            }
            Ok(())
        })
    }
}
