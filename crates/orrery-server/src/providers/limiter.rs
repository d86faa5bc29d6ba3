//! Client-side rate limits of one provider: at most `max_concurrent`
//! requests in flight, requests spaced `60 s / max_requests_per_minute`
//! apart (a token bucket holding one token: no bursts), and after a 429
//! no request before the provider's `Retry-After` has passed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub struct Limiter {
    interval: Duration,
    slots: std::sync::Arc<Semaphore>,
    /// When the next request may start (the bucket's next token).
    next: Mutex<Instant>,
}

/// Held while a request is in flight: one of the `max_concurrent` places.
pub struct Permit {
    _place: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    pub fn new(per_minute: u32, max_concurrent: u32) -> Limiter {
        Limiter {
            interval: Duration::from_secs(60) / per_minute.max(1),
            slots: std::sync::Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// The spacing between two requests.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for a place and for the request's turn; returns the place.
    pub async fn acquire(&self) -> Permit {
        // The semaphore is never closed; were it, the request would go
        // without a place rather than fail.
        let place = self.slots.clone().acquire_owned().await.ok();
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
        Permit { _place: place }
    }

    /// A 429 said to wait `d`: no request starts before then.
    pub fn back_off(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next < until {
            *next = until;
        }
    }
}

/// The delay a `Retry-After` header asks for: seconds (an HTTP date is
/// not honoured: 1 s then), at most an hour.
pub fn retry_after(v: Option<&str>) -> Duration {
    let secs = v
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0)
        .min(3600.0);
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_spaced() {
        let l = Limiter::new(600, 10); // 100 ms apart
        assert_eq!(l.interval(), Duration::from_millis(100));
        let t0 = std::time::Instant::now();
        let mut starts = Vec::new();
        for _ in 0..4 {
            let _p = l.acquire().await;
            starts.push(t0.elapsed());
        }
        assert!(starts[0] < Duration::from_millis(50), "{starts:?}");
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(95), "{starts:?}");
        }
    }

    #[tokio::test]
    async fn concurrency_is_capped() {
        let l = std::sync::Arc::new(Limiter::new(60_000, 2));
        let inflight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (l, inflight, peak) = (l.clone(), inflight.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let _p = l.acquire().await;
                let n = inflight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                inflight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_429_holds_the_next_request_back() {
        let l = Limiter::new(60_000, 1);
        drop(l.acquire().await);
        l.back_off(Duration::from_millis(200));
        let t0 = std::time::Instant::now();
        drop(l.acquire().await);
        assert!(t0.elapsed() >= Duration::from_millis(190));
        assert_eq!(retry_after(Some("2")), Duration::from_secs(2));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(None), Duration::from_secs(1));
        assert_eq!(retry_after(Some("99999")), Duration::from_secs(3600));
    }
}
