use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `check` returns `Some`, polling until `deadline`; fails the
/// test with `what` when the deadline passes. The way tests synchronise on
/// eventually consistent state, never with a fixed sleep.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "gave up after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
