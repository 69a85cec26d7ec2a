//! Polling without an executor, for the benches: the gate's futures are ready at once on the paths measured.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls a future that is expected to be ready at once (a cache hit, the memory store): what the gate's response
/// future does on its first poll, without an executor's overhead in the figure.
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}
