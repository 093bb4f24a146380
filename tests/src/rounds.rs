//! Work that goes round and round beside a load, for tests of what must
//! keep working meanwhile: readers and rebuilds while commands flow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;

/// Tasks, each repeating a round of its own, until the load they run
/// beside is over.
#[derive(Default)]
pub struct Rounds {
    done: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<u64>>,
}

impl Rounds {
    /// Starts a task that runs `round` again and again until the load is
    /// over, and at least `at_least` times; what a round returns is
    /// dropped.
    pub fn spawn<F, Fut>(&mut self, at_least: u64, mut round: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
    {
        let done = Arc::clone(&self.done);
        self.tasks.push(tokio::spawn(async move {
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) || rounds < at_least {
                round().await;
                rounds += 1;
            }
            rounds
        }));
    }

    /// Runs `load` to its end, then waits for every task to finish its
    /// last round; returns what `load` returned and how many rounds each
    /// task ran, in the order they were started.
    pub async fn beside<T>(self, load: impl Future<Output = T>) -> (T, Vec<u64>) {
        let output = load.await;
        self.done.store(true, Ordering::Relaxed);
        let mut rounds = Vec::new();
        for task in self.tasks {
            rounds.push(task.await.expect("every round ran to its end"));
        }
        (output, rounds)
    }
}
