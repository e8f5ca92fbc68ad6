//! A spawned process's task: its future with panics caught, and what its result means as an
//! exit reason.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use partisan_core::signals::ExitReason;

/// What a spawned process's future may return, as its exit reason.
pub trait ProcessExit {
    /// The exit reason.
    fn into_exit_reason(self) -> ExitReason;
}

/// Returning is ending normally.
impl ProcessExit for () {
    fn into_exit_reason(self) -> ExitReason {
        ExitReason::Normal
    }
}

/// The reason itself.
impl ProcessExit for ExitReason {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}

/// `Ok` is normal; an error is [`ExitReason::Error`] with its text.
impl<E: std::fmt::Display> ProcessExit for Result<(), E> {
    fn into_exit_reason(self) -> ExitReason {
        match self {
            Ok(()) => ExitReason::Normal,
            Err(e) => ExitReason::error(e.to_string()),
        }
    }
}

/// A future whose panic becomes an `Err` with the panic's message.
pub(crate) struct CatchPanic<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchPanic<F> {
    pub(crate) fn new(f: F) -> Self {
        CatchPanic { inner: Box::pin(f) }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}
