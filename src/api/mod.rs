//! The public calls: on [`Pool`](crate::Pool) with default settings, on a configured
//! [`Runner`](crate::Runner), and as free functions on the global pool.
//!
//! Every call exists in both places. `Pool`'s infallible calls (`run`, `map`, ...) are
//! written out in `calls.rs` (no settings to honour, and a panic is resumed with its
//! payload); `Runner`'s in `runner.rs` (they return a `Result`, as the settings may stop
//! the run). The fallible calls are written once, on `Runner`, and
//! `calls_on_runner_and_pool!` gives `Pool` the same call under the default settings.

/// Defines each fallible call on `Runner` and, with the same signature, on `Pool`,
/// where it forwards to `pool.runner()`. Each call is written
/// `pub fn name<Generics>(&self, args..) -> Ret where [bounds..] { body }`.
macro_rules! calls_on_runner_and_pool {
    ($(
        $(#[$attr:meta])*
        pub fn $name:ident<$($gen:ident),* $(,)?>(&$self:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty
        where [$($bounds:tt)*]
        $body:block
    )*) => {
        impl crate::api::runner::Runner<'_> {
            $(
                $(#[$attr])*
                pub fn $name<$($gen),*>(&$self $(, $arg: $ty)*) -> $ret
                where
                    $($bounds)*
                $body
            )*
        }

        impl crate::pool::Pool {
            $(
                #[doc = concat!(
                    "[`Runner::", stringify!($name), "`](crate::Runner::", stringify!($name),
                    ") with the default settings: no cancel token, deadline, limit or progress \
                    watcher, and non-blocking items."
                )]
                pub fn $name<$($gen),*>(&$self $(, $arg: $ty)*) -> $ret
                where
                    $($bounds)*
                {
                    $self.runner().$name($($arg),*)
                }
            )*
        }
    };
}

pub(crate) mod calls;
pub(crate) mod global_pool;
pub(crate) mod runner;
