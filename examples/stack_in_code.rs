//! Composing the protective layers by hand over the real HTTP transport.
//!
//! `cargo run -p paragon-examples --example stack_in_code`

use std::time::Duration;

use paragon_client::{HttpTransport, ParagonClient, TransportConfig, UserId};
use paragon_layers::cache::{CacheConfig, CacheLayer};
use paragon_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use paragon_layers::rate_limit::{RateLimitConfig, RateLimitLayer};
use paragon_layers::Clock;
use paragon_sim::{SimConfig, Simulator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A simulated ParagoN on a free local port.
    let sim = Simulator::new(SimConfig::default())
        .spawn("127.0.0.1:0".parse()?)
        .await?;

    let clock = Clock::coarse();
    let transport = HttpTransport::new(TransportConfig::new(sim.base_url().parse()?))?;
    let breaker =
        CircuitBreakerLayer::with_listener(BreakerConfig::default(), clock.clone(), |t| {
            println!("breaker: {:?} -> {:?}", t.from, t.to)
        });
    let stack = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(
            CacheConfig::builder(Duration::from_secs(300))
                .max_entries(10_000)
                .build()?,
            clock.clone(),
        ))
        .layer(breaker)
        .layer(RateLimitLayer::memory(
            RateLimitConfig::builder(100, Duration::from_secs(60)).build()?,
            clock,
        ))
        .service(transport);
    let client = ParagonClient::new(stack);

    let id = UserId::parse("u42")?;
    for _ in 0..2 {
        let fetched = client.fetch_user_with_status(&id).await?;
        println!(
            "{} {:?} <{:?}>",
            fetched.cache.as_str(),
            fetched.value.name(),
            fetched.value.email()
        );
    }
    match client.fetch_user(&UserId::parse("missing-7")?).await {
        Err(e) => println!("missing-7: {e}"),
        Ok(u) => println!("missing-7 unexpectedly found: {u:?}"),
    }
    println!("ParagoN served {} calls", sim.sim().served_total());
    Ok(())
}
