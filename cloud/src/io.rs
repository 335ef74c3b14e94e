//! The shared I/O runtime.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

/// A handle to the runtime that runs rushhour's I/O. Cheap to clone; the runtime
/// stops when the last clone of the [`Io`] that built it is dropped.
#[derive(Clone)]
pub struct Io {
    handle: Handle,
    _owned: Arc<Owned>,
}

/// The runtime, shut down in the background when the last [`Io`] goes: dropping a
/// runtime inside async code would panic.
struct Owned(Option<Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").finish_non_exhaustive()
    }
}

impl Io {
    /// A runtime of its own with `workers` threads (at least one), named `rushhour-io`.
    pub fn new(workers: usize) -> std::io::Result<Io> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("rushhour-io")
            .enable_all()
            .build()?;
        Ok(Io {
            handle: rt.handle().clone(),
            _owned: Arc::new(Owned(Some(rt))),
        })
    }

    /// The runtime's handle (to spawn tasks, or to build clients on).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` to completion on this runtime and returns its output, from any
    /// thread. On a plain thread this is `Handle::block_on`. Called from inside an
    /// async task (where blocking the worker would panic or deadlock), the wait moves
    /// off the worker first: `block_in_place` on a multi-threaded runtime, a scoped
    /// helper thread on a current-thread one.
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => self.handle.block_on(fut),
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.handle.block_on(fut))
            }
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.handle.block_on(fut))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_works_from_threads_and_from_inside_async_code() {
        let io = Io::new(1).unwrap();
        assert_eq!(io.block_on(async { 1 }), 1);
        // From inside a current-thread runtime (where Handle::block_on panics).
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let io2 = io.clone();
        assert_eq!(outer.block_on(async move { io2.block_on(async { 2 }) }), 2);
        // From inside a task of its own runtime.
        let io3 = io.clone();
        let got = io
            .handle()
            .block_on(async move { tokio::spawn(async move { io3.block_on(async { 3 }) }).await });
        assert_eq!(got.unwrap(), 3);
        // The last clone dropped inside async code does not panic.
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async move { drop(io) });
    }
}
