//! How far a group's state-machine records are written. Apply hands its records to the log
//! writer without waiting (they ride the next batch), so for a moment after an entry is applied
//! its history, exception or audit rows may not be readable yet. A read that must see
//! everything applied up to some index waits here until the writer has written that far.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The highest applied log index whose records are written (`None`: nothing yet).
#[derive(Debug)]
pub struct Watermark {
    /// `index + 1`, 0 for none: one number that only grows.
    value: Mutex<u64>,
    changed: Condvar,
    watch: tokio::sync::watch::Sender<u64>,
}

fn encode(index: Option<u64>) -> u64 {
    index.map_or(0, |i| i.saturating_add(1))
}

impl Watermark {
    pub fn new(written: Option<u64>) -> Watermark {
        let v = encode(written);
        Watermark { value: Mutex::new(v), changed: Condvar::new(), watch: tokio::sync::watch::channel(v).0 }
    }

    /// Records that everything applied up to `index` is written.
    pub fn advance(&self, index: Option<u64>) {
        let v = encode(index);
        let mut value = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if v > *value {
            *value = v;
            self.changed.notify_all();
            self.watch.send_replace(v);
        }
    }

    fn reached(&self, index: Option<u64>) -> bool {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) >= encode(index)
    }

    /// Waits (on this thread) until `index` is written; false after `timeout`.
    pub fn wait_blocking(&self, index: Option<u64>, timeout: Duration) -> bool {
        let want = encode(index);
        let value = self.value.lock().unwrap_or_else(|e| e.into_inner());
        match self.changed.wait_timeout_while(value, timeout, |v| *v < want) {
            Ok((v, _)) => *v >= want,
            Err(poisoned) => *poisoned.into_inner().0 >= want,
        }
    }

    /// Waits until `index` is written; false after `timeout`.
    pub async fn wait(&self, index: Option<u64>, timeout: Duration) -> bool {
        if self.reached(index) {
            return true;
        }
        let want = encode(index);
        let mut rx = self.watch.subscribe();
        let waited = tokio::time::timeout(timeout, async { rx.wait_for(|v| *v >= want).await.is_ok() }).await;
        waited.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_end_when_the_index_is_written() {
        let w = std::sync::Arc::new(Watermark::new(Some(3)));
        assert!(w.wait(Some(3), Duration::ZERO).await);
        assert!(w.wait(None, Duration::ZERO).await);
        assert!(!w.wait(Some(4), Duration::from_millis(1)).await);
        let w2 = std::sync::Arc::clone(&w);
        let waiter = tokio::spawn(async move { w2.wait(Some(9), Duration::from_secs(30)).await });
        w.advance(Some(5));
        w.advance(Some(9));
        assert!(waiter.await.unwrap());
        assert!(w.wait_blocking(Some(9), Duration::ZERO));
        assert!(!w.wait_blocking(Some(10), Duration::from_millis(1)));
        // It never goes back.
        w.advance(Some(2));
        assert!(w.wait_blocking(Some(9), Duration::ZERO));
    }
}
