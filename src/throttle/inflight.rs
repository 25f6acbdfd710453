//! The cap on requests in flight. Explicit (`--concurrency`), or sized by
//! Little's law: in flight = rate × latency, so keeping every busy endpoint
//! at its rate needs Σ rates × the observed latency, plus headroom for
//! latency spread, capped at [`MAX_IN_FLIGHT`].
//!
//! A slot is held only while a request is on the wire (after pacing), so a
//! queue at one slow endpoint never takes slots that another endpoint needs.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::pacer::Cancelled;

/// The most requests in flight the automatic sizing allows.
pub const MAX_IN_FLIGHT: usize = 256;
/// The automatic cap never goes below this.
pub const MIN_AUTO: usize = 8;
/// The automatic cap before any latency is known.
pub const INITIAL_AUTO: usize = 32;
/// Headroom over rate × mean latency (latency varies; a queue of requests
/// waiting for a slot costs throughput, a spare slot costs nothing).
pub const HEADROOM: f64 = 1.5;

/// Requests in flight for a total `rate` at `latency_secs`, with headroom.
pub fn littles_law(rate: f64, latency_secs: f64) -> usize {
    if !(rate.is_finite() && latency_secs.is_finite()) {
        return MAX_IN_FLIGHT;
    }
    let n = (rate * latency_secs * HEADROOM).ceil() as usize + 2;
    n.clamp(MIN_AUTO, MAX_IN_FLIGHT)
}

#[derive(Debug)]
pub struct InFlight {
    /// (in use, limit)
    state: Mutex<(usize, usize)>,
    freed: Notify,
    explicit: bool,
}

/// One request in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<InFlight>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.state.lock().expect("in-flight lock").0 -= 1;
        self.gate.freed.notify_one();
    }
}

impl InFlight {
    pub fn new(explicit: Option<usize>) -> Arc<InFlight> {
        let limit = explicit.unwrap_or(INITIAL_AUTO).max(1);
        Arc::new(InFlight { state: Mutex::new((0, limit)), freed: Notify::new(), explicit: explicit.is_some() })
    }

    pub fn limit(&self) -> usize {
        self.state.lock().expect("in-flight lock").1
    }

    /// The most slots there can ever be (pipelines size their queues by it).
    pub fn max(&self) -> usize {
        if self.explicit {
            self.limit()
        } else {
            MAX_IN_FLIGHT
        }
    }

    /// Resize an automatic cap (an explicit one never changes).
    pub fn resize(&self, limit: usize) {
        if self.explicit {
            return;
        }
        let grew = {
            let mut s = self.state.lock().expect("in-flight lock");
            let grew = limit > s.1;
            s.1 = limit.clamp(MIN_AUTO, MAX_IN_FLIGHT);
            grew
        };
        if grew {
            self.freed.notify_waiters();
        }
    }

    pub async fn acquire(self: &Arc<Self>, cancel: &CancellationToken) -> Result<Slot, Cancelled> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.state.lock().expect("in-flight lock");
                if s.0 < s.1 {
                    s.0 += 1;
                    return Ok(Slot { gate: self.clone() });
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                _ = freed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn littles_law_with_headroom_and_bounds() {
        // 250 requests/s at 150 ms: 37.5 in flight on average, 57 + 2 with headroom.
        assert_eq!(littles_law(250.0, 0.150), 59);
        assert_eq!(littles_law(10.0, 0.010), MIN_AUTO);
        assert_eq!(littles_law(10_000.0, 1.0), MAX_IN_FLIGHT);
        assert_eq!(littles_law(f64::INFINITY, 0.1), MAX_IN_FLIGHT);
    }

    #[tokio::test]
    async fn slots_are_capped_freed_and_resized() {
        let gate = InFlight::new(None);
        let cancel = CancellationToken::new();
        gate.resize(8);
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(gate.acquire(&cancel).await.unwrap());
        }
        let waiting = {
            let (g, c) = (gate.clone(), cancel.clone());
            tokio::spawn(async move { g.acquire(&c).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        held.pop();
        held.push(waiting.await.unwrap().unwrap());
        let blocked = {
            let (g, c) = (gate.clone(), cancel.clone());
            tokio::spawn(async move { g.acquire(&c).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        cancel.cancel();
        assert_eq!(blocked.await.unwrap(), Err(Cancelled));
        let fixed = InFlight::new(Some(2));
        fixed.resize(100);
        assert_eq!((fixed.limit(), fixed.max()), (2, 2));
    }
}
