//! Bounds on what an outsider can make us spend: [`Limiter`], a keyed rate limit
//! (how often), and [`Gate`], a bounded concurrency gate (how much at once).
//!
//! The limiter is the generic cell rate algorithm (a token bucket kept as one
//! timestamp per key): `burst` events at once, then one per `interval`. With
//! `max_wait > interval` it also escalates: each event that empties the bucket
//! again doubles the wait that follows, up to `max_wait`, until the key has been
//! quiet long enough for its bucket to refill completely. Time is a parameter
//! (`now`), so the rules are tested without sleeping.
//!
//! Memory is bounded: at most `capacity` keys are tracked. A full table first
//! drops keys whose bucket has refilled (they are indistinguishable from unknown
//! keys); if none has, the key owing the least time goes. An attacker rotating
//! keys therefore evicts its own fresh keys before any key that is being held
//! back, and cannot grow the table.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The key a client is rate-limited under: its IPv4 address, or the /64 prefix of
/// its IPv6 address (one host usually holds a whole /64, so keying by address
/// would let it rotate through 2^64 fresh keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Self(v4),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// How often a key may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Events allowed at once (at least 1).
    pub burst: u32,
    /// After the burst, one more event per `interval`.
    pub interval: Duration,
    /// The longest wait escalation may reach; `interval` (or less) means no escalation.
    pub max_wait: Duration,
    /// Most keys tracked at once.
    pub capacity: usize,
}

/// "Not now": the caller should answer 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1 (`Retry-After` has second precision).
    pub fn secs(self) -> u64 {
        let whole = self.0.as_secs();
        let secs = if self.0.subsec_nanos() > 0 {
            whole.saturating_add(1)
        } else {
            whole
        };
        secs.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When this key's bucket is full again (GCRA's "theoretical arrival time").
    full_at: SystemTime,
    /// Times the bucket was emptied since it was last full: the escalation step.
    strikes: u32,
    /// The latest `now` this key was seen at. A clock stepped back behind it
    /// keeps what the key owed then, instead of adding the step to the wait
    /// (an hour's step back would otherwise hold every tracked client an hour).
    seen: SystemTime,
}

impl Entry {
    /// What the key owes at `now`.
    fn owed(&self, now: SystemTime) -> Duration {
        owed(self.full_at, now.max(self.seen))
    }
}

/// A keyed rate limit; see the module documentation.
#[derive(Debug)]
pub struct Limiter<K> {
    policy: Policy,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    pub fn new(policy: Policy) -> Self {
        let policy = Policy {
            burst: policy.burst.max(1),
            capacity: policy.capacity.max(1),
            ..policy
        };
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Counts one event for `key` if the key may act now; otherwise counts nothing
    /// and says how long to wait.
    pub fn acquire(&self, key: &K, now: SystemTime) -> Result<(), RetryAfter> {
        let mut entries = self.lock();
        let entry = entries.get(key).copied();
        let owed = entry.map_or(Duration::ZERO, |e| e.owed(now));
        let slack = self.slack();
        if owed > slack {
            // After a step back, count the wait from the new clock from now on.
            if let Some(e) = entry.filter(|e| now < e.seen) {
                entries.insert(
                    key.clone(),
                    Entry {
                        full_at: now + owed,
                        seen: now,
                        ..e
                    },
                );
            }
            return Err(RetryAfter(owed - slack));
        }
        // A bucket that refilled completely forgets earlier escalation.
        let strikes = entry
            .filter(|_| owed > Duration::ZERO)
            .map_or(0, |e| e.strikes);
        let mut cost = self.policy.interval;
        let mut next_strikes = strikes;
        if owed + cost > slack && self.policy.max_wait > self.policy.interval {
            cost = escalated(self.policy.interval, strikes, self.policy.max_wait);
            next_strikes = strikes.saturating_add(1);
        }
        let full_at = now + owed.saturating_add(cost);
        if entry.is_none() {
            self.make_room(&mut entries, now);
        }
        entries.insert(
            key.clone(),
            Entry {
                full_at,
                strikes: next_strikes,
                seen: now,
            },
        );
        Ok(())
    }

    /// Gives back one event's `interval` to `key` (an event that turned out not
    /// to need limiting); escalation already earned stays.
    pub fn refund(&self, key: &K, now: SystemTime) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            let owed = entry.owed(now).saturating_sub(self.policy.interval);
            entry.full_at = now + owed;
            entry.seen = now;
        }
    }

    /// Forgets `key` (a success that clears earlier failures).
    pub fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time a key may owe and still act: `(burst - 1) × interval`.
    fn slack(&self) -> Duration {
        self.policy
            .interval
            .saturating_mul(self.policy.burst.saturating_sub(1))
    }

    fn make_room(&self, entries: &mut HashMap<K, Entry>, now: SystemTime) {
        if entries.len() < self.policy.capacity {
            return;
        }
        entries.retain(|_, e| e.full_at > now);
        while entries.len() >= self.policy.capacity {
            let Some(stalest) = entries
                .iter()
                .min_by_key(|(_, e)| e.full_at)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            entries.remove(&stalest);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        // The table holds plain values: a panic elsewhere cannot leave it torn.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Time until `full_at`, zero when it has passed (or the clock went back past it).
fn owed(full_at: SystemTime, now: SystemTime) -> Duration {
    full_at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// `interval × 2^strikes`, at most `max`.
fn escalated(interval: Duration, strikes: u32, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(strikes.min(31)).unwrap_or(u32::MAX);
    interval.saturating_mul(factor).min(max)
}

/// A bounded concurrency gate for expensive work (password hashing): at most
/// `permits` jobs run at once and at most `queue` more wait; anything beyond
/// that is refused at once instead of piling up.
#[derive(Debug)]
pub struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    queue: usize,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::per_core()
    }
}

/// The gate is full: answer 503 and ask the client to come back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateFull;

impl Gate {
    pub fn new(permits: usize, queue: usize) -> Self {
        let permits = permits.max(1);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(permits)),
            size: permits,
            waiting: AtomicUsize::new(0),
            queue,
            running: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// One permit per core and a queue of [`QUEUE_PER_PERMIT`] jobs per permit.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cores, QUEUE_PER_PERMIT * cores)
    }

    /// Jobs allowed to run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs allowed to wait.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// The most jobs that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Runs `job` through the blocking gate ([`crate::blocking`]) once a permit
    /// of this gate is free, or refuses at once
    /// when `queue` jobs already wait. The permit moves into the blocking task, so
    /// a caller that gives up (a client that disconnects) cannot free it while the
    /// job still runs.
    pub async fn run<T, F>(
        &self,
        job: F,
    ) -> Result<Result<T, crate::blocking::BlockingError>, GateFull>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = Waiting::enter(&self.waiting, self.queue).ok_or(GateFull)?;
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| GateFull)?
            }
        };
        let running = Arc::clone(&self.running);
        let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now_running, Ordering::SeqCst);
        Ok(crate::blocking::run(move || {
            let permit = permit;
            // Dropped before the permit (reverse order), also if `job` panics, so
            // `running` never exceeds the permits.
            let running = Running(running);
            let out = job();
            drop(running);
            drop(permit);
            out
        })
        .await)
    }
}

/// Waiting jobs allowed per permit: at ~70 ms per bcrypt check (cost 10) the
/// last in the queue waits about a second.
pub const QUEUE_PER_PERMIT: usize = 16;

/// A place in the queue, given back when dropped (also when the caller gives up).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(counter))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy(burst: u32, interval: u64, max_wait: u64, capacity: usize) -> Policy {
        Policy {
            burst,
            interval: secs(interval),
            max_wait: secs(max_wait),
            capacity,
        }
    }

    #[test]
    fn burst_then_one_per_interval() {
        let limiter = Limiter::new(policy(3, 10, 10, 100));
        for _ in 0..3 {
            assert_eq!(limiter.acquire(&"a", t0()), Ok(()));
        }
        assert_eq!(limiter.acquire(&"a", t0()), Err(RetryAfter(secs(10))));
        // A refused event is not counted.
        assert_eq!(
            limiter.acquire(&"a", t0() + secs(4)),
            Err(RetryAfter(secs(6)))
        );
        assert_eq!(limiter.acquire(&"a", t0() + secs(10)), Ok(()));
        assert!(limiter.acquire(&"a", t0() + secs(10)).is_err());
        // Other keys are independent.
        assert_eq!(limiter.acquire(&"b", t0()), Ok(()));
        // After a quiet spell the whole burst is back.
        for _ in 0..3 {
            assert_eq!(limiter.acquire(&"a", t0() + secs(40)), Ok(()));
        }
    }

    #[test]
    fn escalation_doubles_the_wait_up_to_the_cap_and_resets_when_refilled() {
        let limiter = Limiter::new(policy(2, 60, 900, 100));
        let mut now = t0();
        assert!(limiter.acquire(&"k", now).is_ok());
        assert!(limiter.acquire(&"k", now).is_ok());
        let mut waits = Vec::new();
        for _ in 0..7 {
            let wait = limiter.acquire(&"k", now).unwrap_err();
            waits.push(wait.secs());
            now += wait.0;
            assert!(limiter.acquire(&"k", now).is_ok());
        }
        assert_eq!(waits, [60, 120, 240, 480, 900, 900, 900]);
        // Quiet until the bucket is full: back to the plain burst and interval.
        now += secs(60 + 900);
        assert!(limiter.acquire(&"k", now).is_ok());
        assert!(limiter.acquire(&"k", now).is_ok());
        assert_eq!(limiter.acquire(&"k", now).unwrap_err().secs(), 60);
    }

    #[test]
    fn refund_gives_back_one_interval() {
        let limiter = Limiter::new(policy(2, 60, 60, 100));
        assert!(limiter.acquire(&"k", t0()).is_ok());
        limiter.refund(&"k", t0());
        assert!(limiter.acquire(&"k", t0()).is_ok());
        assert!(limiter.acquire(&"k", t0()).is_ok());
        assert_eq!(limiter.acquire(&"k", t0()), Err(RetryAfter(secs(60))));
        // Never below a full bucket, and unknown keys stay unknown.
        limiter.refund(&"k", t0());
        limiter.refund(&"k", t0());
        limiter.refund(&"k", t0());
        limiter.refund(&"other", t0());
        assert_eq!(limiter.len(), 1);
        assert!(limiter.acquire(&"k", t0()).is_ok());
        assert!(limiter.acquire(&"k", t0()).is_ok());
        assert!(limiter.acquire(&"k", t0()).is_err());
    }

    #[test]
    fn forget_clears_a_key() {
        let limiter = Limiter::new(policy(1, 60, 60, 100));
        assert!(limiter.acquire(&"k", t0()).is_ok());
        assert!(limiter.acquire(&"k", t0()).is_err());
        limiter.forget(&"k");
        assert!(limiter.acquire(&"k", t0()).is_ok());
    }

    #[test]
    fn rotating_keys_cannot_grow_the_table_or_free_a_held_key() {
        let limiter = Limiter::new(policy(2, 60, 600, 50));
        // The attacker's own key is held back: it owes more than any fresh key.
        assert!(limiter.acquire(&u32::MAX, t0()).is_ok());
        assert!(limiter.acquire(&u32::MAX, t0()).is_ok());
        let held = limiter.acquire(&u32::MAX, t0()).unwrap_err();
        for key in 0..10_000u32 {
            assert!(limiter.acquire(&key, t0()).is_ok());
            assert!(limiter.len() <= 50);
        }
        assert_eq!(limiter.len(), 50);
        assert_eq!(limiter.acquire(&u32::MAX, t0()), Err(held));
    }

    #[test]
    fn refilled_keys_are_dropped_first() {
        let limiter = Limiter::new(policy(5, 1, 1, 3));
        for key in 0..3 {
            assert!(limiter.acquire(&key, t0()).is_ok());
        }
        assert!(limiter.acquire(&9, t0() + secs(5)).is_ok());
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn a_clock_going_back_neither_unlocks_nor_adds_the_step_to_the_wait() {
        let limiter = Limiter::new(policy(1, 60, 60, 10));
        assert!(limiter.acquire(&"k", t0()).is_ok());
        let back = t0() - secs(3600);
        // Still held for what it owed, not for the hour the clock went back.
        assert_eq!(limiter.acquire(&"k", back).unwrap_err().secs(), 60);
        assert!(limiter.acquire(&"k", back + secs(60)).is_ok());
        // Other keys are untouched by the step.
        assert!(limiter.acquire(&"other", back).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).secs(), 1);
        assert_eq!(RetryAfter(Duration::ZERO).secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(2001)).secs(), 3);
        assert_eq!(RetryAfter(secs(7)).secs(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gate_never_runs_more_than_its_permits_and_refuses_beyond_the_queue() {
        let gate = Arc::new(Gate::new(2, 3));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let mut jobs = Vec::new();
        for _ in 0..5 {
            let gate = Arc::clone(&gate);
            let wait = Arc::clone(&wait);
            jobs.push(tokio::spawn(async move {
                gate.run(move || {
                    let _ = wait.lock().unwrap().recv();
                })
                .await
            }));
        }
        // Two run, three wait: the sixth is refused at once.
        while gate.waiting.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.run(|| ()).await.unwrap_err(), GateFull);
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for job in jobs {
            assert!(job.await.unwrap().unwrap().is_ok());
        }
        assert_eq!(gate.peak(), 2);
        assert_eq!(gate.running.load(Ordering::SeqCst), 0);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_caller_giving_up_leaves_the_queue() {
        use std::future::Future;
        use std::task::Poll;

        let gate = Arc::new(Gate::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move {
                gate.run(move || {
                    let _ = wait.recv();
                })
                .await
            }
        });
        while gate.running.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let mut second = Box::pin(gate.run(|| ()));
        let polled = std::future::poll_fn(|cx| Poll::Ready(second.as_mut().poll(cx))).await;
        assert!(polled.is_pending());
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 1);
        drop(second);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        assert!(first.await.unwrap().unwrap().is_ok());
    }
}
