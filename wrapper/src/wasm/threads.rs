//! The threads wasm workers run on, kept for the next worker when one ends.
//!
//! A wasm worker is a thread, and starting one is most of what a worker's start costs: on this
//! machine about 60 µs to create it, then its first allocations (a fresh thread gets a malloc
//! arena of its own). The first task of an algorithm waits for that. So a worker's thread is
//! not ended with the worker: it parks, and the next worker runs on it. Up to `keep` threads
//! wait so (one per core by default); [`Threads::warm`] parks one before any worker asks, so
//! that even the first worker finds a thread.
//!
//! A parked thread holds no memory of a worker (its worker's state went with the closure it
//! ran) and waits on a channel of its own, costing nothing but its stack's address space. The
//! parked threads end when the last handle to their `Threads` goes.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// What a thread runs: one worker, from its start to its end.
pub type Work = Box<dyn FnOnce() + Send>;

/// Threads for workers: a parked one if there is one, else a new one.
#[derive(Clone)]
pub struct Threads {
    inner: Arc<Inner>,
}

struct Inner {
    /// The name every thread gets (they serve one worker after another).
    name: String,
    /// How many threads may wait for a worker at once; beyond it, a thread whose worker ended
    /// ends too.
    keep: usize,
    /// The parked threads' channels, the most recently parked last.
    parked: Mutex<Vec<mpsc::Sender<Work>>>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parked = self.inner.parked.lock().map_or(0, |parked| parked.len());
        f.debug_struct("Threads")
            .field("name", &self.inner.name)
            .field("keep", &self.inner.keep)
            .field("parked", &parked)
            .finish()
    }
}

impl Threads {
    /// Threads named `name`, at most `keep` of them kept waiting (0: one per worker, ended
    /// with it).
    pub fn new(name: &str, keep: usize) -> Threads {
        Threads {
            inner: Arc::new(Inner {
                name: name.to_string(),
                keep,
                parked: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Parks one thread now, unless one is parked already (or none may be): the first worker
    /// then does not wait for a thread to be made.
    pub fn warm(&self) -> Result<(), String> {
        let parked = self.inner.parked.lock().map_or(0, |parked| parked.len());
        if parked > 0 || self.inner.keep == 0 {
            return Ok(());
        }
        self.spawn(None)
    }

    /// Runs `work` on a parked thread, else on a new one.
    pub fn run(&self, mut work: Work) -> Result<(), String> {
        loop {
            let next = match self.inner.parked.lock() {
                Ok(mut parked) => parked.pop(),
                Err(_) => None,
            };
            let Some(thread) = next else {
                return self.spawn(Some(work));
            };
            match thread.send(work) {
                Ok(()) => return Ok(()),
                // That thread is gone (it panicked): the next one, or a new one.
                Err(mpsc::SendError(back)) => work = back,
            }
        }
    }

    /// How many threads wait for a worker now.
    pub fn parked(&self) -> usize {
        self.inner.parked.lock().map_or(0, |parked| parked.len())
    }

    fn spawn(&self, first: Option<Work>) -> Result<(), String> {
        let name = if first.is_some() { WORKING } else { PARKED };
        // Weak: the last `Threads` dropped drops the parked channels, which ends the threads.
        let inner = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut next = first;
                loop {
                    if let Some(work) = next.take() {
                        // The system's name says what the thread does now (`ps -L`, /proc):
                        // a worker's thread, or a parked one.
                        os_name(WORKING);
                        work();
                        os_name(PARKED);
                    }
                    let (to_me, mine) = mpsc::channel::<Work>();
                    let Some(threads) = inner.upgrade() else {
                        return;
                    };
                    match threads.parked.lock() {
                        Ok(mut parked) if parked.len() < threads.keep => parked.push(to_me),
                        // Enough wait already: this one ends.
                        _ => return,
                    }
                    drop(threads);
                    match mine.recv() {
                        Ok(work) => next = Some(work),
                        Err(_) => return,
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start a wasm worker's thread: {e}"))
    }
}

/// The system's names of a thread running a worker, and of a parked one (15 bytes at most).
const WORKING: &str = "hkube-wasm-work";
const PARKED: &str = "hkube-wasm-idle";

/// Sets the calling thread's name as the system shows it. Linux only.
fn os_name(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of ours, copying at most 16 bytes.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn thread_id_of(threads: &Threads) -> std::thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        threads
            .run(Box::new(move || {
                let _ = tx.send(std::thread::current().id());
            }))
            .expect("ran");
        rx.recv_timeout(Duration::from_secs(5)).expect("an answer")
    }

    /// Waits until `n` threads are parked (a thread parks just after its work ends).
    fn until_parked(threads: &Threads, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads.parked() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} parked, not {n}",
                threads.parked()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_warmed_thread_runs_the_first_worker_and_the_next_one_reuses_it() {
        let threads = Threads::new("test-wasm-worker", 2);
        threads.warm().expect("warmed");
        until_parked(&threads, 1);
        // A second warm parks no second thread.
        threads.warm().expect("warmed");
        assert_eq!(threads.parked(), 1);
        let first = thread_id_of(&threads);
        until_parked(&threads, 1);
        let second = thread_id_of(&threads);
        assert_eq!(first, second, "the parked thread was not reused");
        assert_ne!(first, std::thread::current().id());
    }

    #[test]
    fn no_more_than_keep_threads_wait_and_none_with_keep_0() {
        let threads = Threads::new("test-wasm-worker", 1);
        // Three workers at once: three threads; when they end, one stays.
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (done, ended) = mpsc::channel();
        for _ in 0..3 {
            let (gate, done) = (Arc::clone(&gate), done.clone());
            threads
                .run(Box::new(move || {
                    let _ = gate.lock().map(|gate| gate.recv());
                    let _ = done.send(());
                }))
                .expect("ran");
        }
        for _ in 0..3 {
            release.send(()).expect("released");
        }
        for _ in 0..3 {
            ended.recv_timeout(Duration::from_secs(5)).expect("ended");
        }
        until_parked(&threads, 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(threads.parked(), 1);

        let none = Threads::new("test-wasm-worker", 0);
        none.warm().expect("nothing to do");
        let (a, b) = (thread_id_of(&none), thread_id_of(&none));
        assert_ne!(a, b, "with keep 0 a thread must not be reused");
        assert_eq!(none.parked(), 0);
    }

    #[test]
    fn parked_threads_end_with_the_last_handle() {
        let threads = Threads::new("test-wasm-worker", 1);
        let (tx, rx) = mpsc::channel::<()>();
        // The work keeps a sender in the thread's stack only while it runs; the parked thread
        // then holds nothing: the channel closes once the thread itself is gone.
        struct Alive(#[allow(dead_code)] mpsc::Sender<()>);
        thread_local!(static ALIVE: std::cell::RefCell<Option<Alive>> = const { std::cell::RefCell::new(None) });
        threads
            .run(Box::new(move || {
                ALIVE.with(|alive| *alive.borrow_mut() = Some(Alive(tx)))
            }))
            .expect("ran");
        until_parked(&threads, 1);
        drop(threads);
        // The thread's locals go when the thread ends: the sender with them.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected),
            "the parked thread did not end"
        );
    }
}
