//! Waiting on a condition with a deadline: the only way tests and the demo wait.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Polls `probe` every `interval` until it yields `Some`, or `timeout` passes (→ `None`).
/// The probe runs at least once, even with a zero timeout.
pub async fn eventually<T, F, Fut>(timeout: Duration, interval: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_some_and_gives_up_at_the_deadline() {
        let calls = Cell::new(0);
        let got = eventually(Duration::from_secs(10), Duration::from_secs(1), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, Some(3));

        let start = Instant::now();
        let never: Option<()> =
            eventually(Duration::from_secs(5), Duration::from_secs(1), || async {
                None
            })
            .await;
        assert_eq!(never, None);
        assert!(start.elapsed() >= Duration::from_secs(5));
    }
}
