//! The media threads: each runs its own single-threaded tokio runtime, and
//! every call's media task lives on one of them, assigned round-robin.
//!
//! RTP is many tiny events: fifty packets a second per leg, each waking its
//! call's task. On the gateway's work-stealing runtime each wake could
//! unpark another worker thread, and at a thousand calls the gateway spent
//! a third of its time in the kernel's context switches. A thread that owns
//! its calls' sockets waits in one `epoll_wait` for all of them and never
//! hands a packet to another thread (decision 0011). Uploads and everything
//! else stay on the main runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;

use super::spooler::Spooler;
use tokio_util::sync::CancellationToken;

/// Handles to the media threads and to the main runtime. The threads stop
/// when the last handle is gone: the call manager's, and each call task's
/// own, so calls still finishing keep their thread.
#[derive(Debug, Clone)]
pub struct MediaThreads {
    inner: Arc<Threads>,
    next: Arc<AtomicUsize>,
    /// The runtime the rest of the gateway runs on (uploads, events).
    pub main: Handle,
    /// Recordings' file I/O, off the media threads.
    pub spooler: Spooler,
}

#[derive(Debug)]
struct Threads {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MediaThreads {
    /// Starts `count` media threads (two per CPU when 0: measured better
    /// than one per CPU, see decision 0012). Call from within the main
    /// runtime.
    pub fn start(count: usize) -> std::io::Result<MediaThreads> {
        let count = if count == 0 { 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) } else { count };
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("media-{i}")).spawn(move || runtime.block_on(stop.cancelled()))?;
        }
        let main = Handle::current();
        let spooler = Spooler::start(main.clone())?;
        Ok(MediaThreads { inner: Arc::new(Threads { handles, stop }), next: Arc::new(AtomicUsize::new(0)), main, spooler })
    }

    /// Media on the current runtime only (tests of one module).
    pub fn current() -> MediaThreads {
        let inner = Threads { handles: vec![Handle::current()], stop: CancellationToken::new() };
        let spooler = Spooler::start(Handle::current()).expect("a thread for the spool");
        MediaThreads { inner: Arc::new(inner), next: Arc::new(AtomicUsize::new(0)), main: Handle::current(), spooler }
    }

    /// Runs a call's media task on the next media thread.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inner.handles.len();
        self.inner.handles[i].spawn(task);
    }

    pub fn count(&self) -> usize {
        self.inner.handles.len()
    }
}
