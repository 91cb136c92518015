//! Building the stack from a configuration file, exactly as `paragon-edge` does.
//!
//! `cargo run -p paragon-examples --example stack_from_config -- config/paragon-edge.toml`

use std::path::PathBuf;

use paragon_client::UserId;
use paragon_edge::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).map(PathBuf::from);
    // The file, then PARAGON_EDGE__* overrides; checked once, errors naming the key.
    let settings = Settings::load(path.as_deref())?;
    // Without upstream.base_url this starts the embedded simulator.
    let edge = paragon_edge::server::build(settings, paragon_layers::Clock::coarse()).await?;
    let stack = edge.state.stack();
    let id = UserId::parse("u1")?;
    for _ in 0..2 {
        let fetched = stack.client.fetch_user_with_status(&id).await?;
        println!(
            "{} {}",
            fetched.cache.as_str(),
            String::from_utf8_lossy(&fetched.value.raw_json())
        );
    }
    if let Some(cache) = &stack.cache {
        println!("cache: {:?}", cache.stats());
    }
    if let Some(breaker) = &stack.breaker {
        println!("breaker: {}", breaker.state().as_str());
    }
    Ok(())
}
