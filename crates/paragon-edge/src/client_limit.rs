//! Fairness between frontend clients (`[client_limit]`).
//!
//! Each client, known by its IP or by a header it sends, has two budgets: its edge
//! requests (`max_requests` per `window`; a batch counts 1 + its uncached ids), and its
//! misses, which may take at most `max_upstream_share` of the upstream budget. So one
//! client sending fresh ids spends its own share of ParagoN's quota, not everyone's.
//!
//! With the rate limiter's Redis backend, the upstream share is the fleet's: each
//! client's share is one GCRA key in Redis ([`RedisKeyedBudget`]), so a client spread
//! over every instance still gets one share; while Redis is unreachable each instance
//! keeps it on its own. The request budget is always per instance.
//!
//! Both budgets are GCRA steps over a map from client to its theoretical arrival time,
//! the same arithmetic as the upstream limiter ([`Gcra`]). The map stays bounded: a
//! client whose budget is full again (its TAT in the past) is dropped, which is exact,
//! since a fresh client has that same budget; and past [`MAX_TRACKED`] busy clients the
//! newcomers share one budget instead of growing the map. Its hasher is std's SipHash
//! with a per-process random key, because the keys are chosen by clients.
//!
//! A reloaded configuration changes the budgets in place ([`ClientLimiter::reconfigure`]):
//! what each client has spent is kept, repriced to the new rate ([`Gcra::reprice`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use paragon_layers::fleet::{RedisKeyedBudget, RedisLink};
use paragon_layers::rate_limit::gcra::Gcra;
use paragon_layers::Clock;
use parking_lot::Mutex;

use crate::config::{ClientKey, ClientLimitSection, RateLimitSection};

/// Most clients followed one by one; the rest share one budget.
pub const MAX_TRACKED: usize = 100_000;
/// Longest key kept for a client (a header value may be longer; the rest is ignored).
const MAX_KEY_BYTES: usize = 128;
/// The key of the budget that newcomers share while the map is full.
const OVERFLOW: &str = "\u{0}overflow";

/// Which budget of a client refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its edge requests.
    Requests {
        /// When a request would be admitted again.
        retry_after: Duration,
    },
    /// Its share of the upstream budget.
    UpstreamShare {
        /// When a miss would be admitted again.
        retry_after: Duration,
    },
}

/// The per-client budgets of one edge instance.
pub struct ClientLimiter {
    key: ClientKey,
    requests: Budgets,
    upstream: Option<Budgets>,
    fleet: Option<RedisKeyedBudget>,
}

impl ClientLimiter {
    /// Budgets for `section`; the upstream share is of `rate_limit`'s budget (there is
    /// none when the rate limiter is off), kept in Redis through `fleet` when given.
    pub fn new(
        section: &ClientLimitSection,
        key: ClientKey,
        rate_limit: &RateLimitSection,
        clock: Clock,
        fleet: Option<RedisLink>,
    ) -> ClientLimiter {
        let (requests, upstream) = budgets(section, rate_limit);
        let fleet = fleet
            .zip(upstream)
            .map(|(link, gcra)| RedisKeyedBudget::new(link, "share", gcra));
        ClientLimiter {
            key,
            requests: Budgets::new(requests, clock.clone()),
            upstream: upstream.map(|g| Budgets::new(g, clock)),
            fleet,
        }
    }

    /// Takes the budgets of a reloaded `section` and `rate_limit`, keeping what each
    /// client has spent. The share of the upstream budget exists only when the rate
    /// limiter was on at start (turning it on or off needs a restart).
    pub fn reconfigure(&self, section: &ClientLimitSection, rate_limit: &RateLimitSection) {
        let (requests, upstream) = budgets(section, rate_limit);
        self.requests.set_gcra(requests);
        if let (Some(budgets), Some(gcra)) = (&self.upstream, upstream) {
            budgets.set_gcra(gcra);
        }
        if let (Some(fleet), Some(gcra)) = (&self.fleet, upstream) {
            fleet.set_gcra(gcra);
        }
    }

    /// The client of a request: the named header's value when configured and present,
    /// else the peer's IP.
    pub fn client_of(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
        if let ClientKey::Header(name) = &self.key {
            if let Some(value) = headers.get(name).filter(|v| !v.is_empty()) {
                let bytes = value.as_bytes();
                let kept = &bytes[..bytes.len().min(MAX_KEY_BYTES)];
                return format!("h:{}", String::from_utf8_lossy(kept));
            }
        }
        match peer {
            Some(addr) => format!("ip:{}", addr.ip()),
            None => "ip:unknown".to_owned(),
        }
    }

    /// Charges `client` `requests` against its request budget and `misses` (ids it asks
    /// for that are not cached) against its upstream share. Nothing is charged when
    /// refused. A single user costs one request; a batch costs 1 + its misses.
    pub async fn admit(&self, client: &str, requests: u32, misses: u32) -> Result<(), Refusal> {
        let refused = |retry_after| Refusal::Requests { retry_after };
        let Some(share) = self.upstream.as_ref().filter(|_| misses > 0) else {
            return self.requests.take(client, requests).map_err(refused);
        };
        let over_share = |retry_after| Refusal::UpstreamShare { retry_after };
        self.requests.check(client, requests).map_err(refused)?;
        match &self.fleet {
            // The fleet's share, charged in Redis (or here while Redis is unreachable).
            Some(fleet) => match fleet.take(client, misses).await {
                Some(taken) => taken.map_err(over_share)?,
                None => share.take(client, misses).map_err(over_share)?,
            },
            None => share.check(client, misses).map_err(over_share)?,
        }
        // Checked above; a concurrent request of the same client may have taken it
        // since, and then this one is still charged (never more than one request over).
        let _ = self.requests.take(client, requests);
        if self.fleet.is_none() {
            let _ = share.take(client, misses);
        }
        Ok(())
    }

    /// Clients followed one by one now.
    pub fn tracked(&self) -> usize {
        self.requests.state.lock().1.len()
    }
}

/// The GCRA of each client's requests, and of its share of the upstream budget (when the
/// rate limiter is on).
fn budgets(section: &ClientLimitSection, rate_limit: &RateLimitSection) -> (Gcra, Option<Gcra>) {
    let requests = Gcra::new(section.max_requests, section.window.0, section.max_requests);
    let upstream = rate_limit.enabled.then(|| {
        let share = section.max_upstream_share;
        let burst = if rate_limit.burst == 0 {
            rate_limit.max_requests
        } else {
            rate_limit.burst
        };
        let scaled = |n: u32| ((f64::from(n) * share).floor() as u32).max(1);
        Gcra::new(
            scaled(rate_limit.max_requests),
            rate_limit.window.0,
            scaled(burst),
        )
    });
    (requests, upstream)
}

/// One budget per client.
struct Budgets {
    clock: Clock,
    /// The budget of each client, and the clients' TATs; one lock, so a change of the
    /// budget reprices every TAT at once.
    state: Mutex<(Gcra, HashMap<String, u64>)>,
}

impl Budgets {
    fn new(gcra: Gcra, clock: Clock) -> Budgets {
        Budgets {
            clock,
            state: Mutex::new((gcra, HashMap::new())),
        }
    }

    /// Takes a new budget, keeping what each client has spent.
    fn set_gcra(&self, new: Gcra) {
        let now = self.clock.now().0;
        let mut state = self.state.lock();
        let (gcra, tats) = &mut *state;
        if *gcra == new {
            return;
        }
        for tat in tats.values_mut() {
            *tat = new.reprice(gcra, *tat, now);
        }
        *gcra = new;
    }

    /// The TAT after `n` more calls at `now` from `tat`, if they conform.
    fn step(gcra: &Gcra, tat: u64, now: u64, n: u32) -> Result<u64, Duration> {
        let cost = gcra.interval.saturating_mul(u64::from(n));
        let new_tat = tat.max(now).saturating_add(cost);
        let allow_at = new_tat.saturating_sub(gcra.tolerance);
        if allow_at <= now {
            Ok(new_tat)
        } else {
            Err(Duration::from_nanos(allow_at - now))
        }
    }

    /// Whether `n` calls of `client` would conform now; charges nothing.
    fn check(&self, client: &str, n: u32) -> Result<(), Duration> {
        let now = self.clock.now().0;
        let state = self.state.lock();
        let (gcra, tats) = &*state;
        let tat = tats
            .get(client)
            .or_else(|| tats.get(OVERFLOW).filter(|_| tats.len() >= MAX_TRACKED))
            .copied()
            .unwrap_or(0);
        Self::step(gcra, tat, now, n).map(drop)
    }

    /// Charges `n` calls to `client` if they conform.
    fn take(&self, client: &str, n: u32) -> Result<(), Duration> {
        let now = self.clock.now().0;
        let mut state = self.state.lock();
        let (gcra, tats) = &mut *state;
        if !tats.contains_key(client) && tats.len() >= MAX_TRACKED {
            // Those whose budget is whole again cost nothing to forget.
            tats.retain(|_, tat| *tat > now);
        }
        let key = if tats.contains_key(client) || tats.len() < MAX_TRACKED {
            client
        } else {
            OVERFLOW
        };
        let tat = tats.get(key).copied().unwrap_or(0);
        let new_tat = Self::step(gcra, tat, now, n)?;
        tats.insert(key.to_owned(), new_tat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    /// The answer of a future that needs no I/O (no fleet: every budget is local).
    fn now<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_util::FutureExt::now_or_never(f).expect("local budgets answer at once")
    }

    fn limiter(max_requests: u32, share: f64, upstream: u32) -> (ClientLimiter, Clock) {
        let clock = Clock::manual();
        let section = ClientLimitSection {
            enabled: true,
            max_requests,
            max_upstream_share: share,
            window: Dur::secs(60),
            ..ClientLimitSection::default()
        };
        let rate = RateLimitSection {
            max_requests: upstream,
            ..RateLimitSection::default()
        };
        (
            ClientLimiter::new(&section, ClientKey::Ip, &rate, clock.clone(), None),
            clock,
        )
    }

    #[test]
    fn each_client_has_its_own_request_budget() {
        let (l, clock) = limiter(3, 1.0, 1000);
        for _ in 0..3 {
            assert_eq!(now(l.admit("a", 1, 0)), Ok(()));
        }
        let Err(Refusal::Requests { retry_after }) = now(l.admit("a", 1, 0)) else {
            panic!("the fourth request of a is refused");
        };
        assert_eq!(retry_after, Duration::from_secs(20));
        assert_eq!(now(l.admit("b", 1, 0)), Ok(()), "b is not affected by a");
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            now(l.admit("a", 1, 0)),
            Ok(()),
            "a's budget refills at its rate"
        );
    }

    #[test]
    fn misses_take_the_clients_share_of_the_upstream_budget() {
        // 100 upstream calls per minute, a quarter each: 25 misses for one client.
        let (l, _clock) = limiter(1000, 0.25, 100);
        assert_eq!(now(l.admit("greedy", 1, 25)), Ok(()));
        assert!(matches!(
            now(l.admit("greedy", 1, 1)),
            Err(Refusal::UpstreamShare { .. })
        ));
        assert_eq!(
            now(l.admit("greedy", 1, 0)),
            Ok(()),
            "hits are still served"
        );
        assert_eq!(now(l.admit("polite", 1, 1)), Ok(()));
    }

    #[test]
    fn a_batch_counts_one_plus_its_misses_and_a_refusal_charges_nothing() {
        let (l, _clock) = limiter(5, 1.0, 1000);
        assert!(matches!(
            now(l.admit("a", 6, 5)),
            Err(Refusal::Requests { .. })
        ));
        assert_eq!(
            now(l.admit("a", 5, 4)),
            Ok(()),
            "the refused batch charged nothing"
        );
        assert!(now(l.admit("a", 1, 0)).is_err());
    }

    #[test]
    fn clients_come_from_the_header_or_the_ip() {
        let (mut l, _clock) = limiter(5, 1.0, 1000);
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(l.client_of(&headers, Some(peer)), "ip:10.1.2.3");
        l.key = ClientKey::Header(axum::http::HeaderName::from_static("x-user-id"));
        assert_eq!(l.client_of(&headers, Some(peer)), "ip:10.1.2.3");
        headers.insert("x-user-id", "u-42".parse().unwrap());
        assert_eq!(l.client_of(&headers, Some(peer)), "h:u-42");
        headers.insert("x-user-id", "x".repeat(1000).parse().unwrap());
        assert_eq!(l.client_of(&headers, Some(peer)).len(), 2 + MAX_KEY_BYTES);
    }

    #[test]
    fn the_map_forgets_whole_budgets_and_shares_one_past_its_bound() {
        let (l, clock) = limiter(2, 1.0, 1000);
        for i in 0..MAX_TRACKED {
            now(l.admit(&format!("c{i}"), 1, 0)).unwrap();
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        // Full of busy clients: newcomers share the overflow budget of 2.
        assert_eq!(now(l.admit("new-1", 1, 0)), Ok(()));
        assert_eq!(now(l.admit("new-2", 1, 0)), Ok(()));
        assert!(now(l.admit("new-3", 1, 0)).is_err());
        assert!(l.tracked() <= MAX_TRACKED + 1);
        // Once their budgets are whole again, they are forgotten and room is made.
        clock.advance(Duration::from_secs(61));
        assert_eq!(now(l.admit("new-4", 1, 0)), Ok(()));
        assert!(l.tracked() <= 2, "{}", l.tracked());
    }
}
