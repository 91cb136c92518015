//! Testing your own code against the ParagoN client with a scripted fake, layers on.
//!
//! `cargo run -p paragon-examples --example test_with_fake`

use std::time::Duration;

use paragon_client::testing::FakeParagon;
use paragon_client::{Error, ParagonClient, UserId};
use paragon_layers::cache::{CacheConfig, CacheLayer};
use paragon_layers::Clock;

/// The business code under test: a greeting for a user, or a fallback.
async fn greeting<S>(client: &ParagonClient<S>, id: &UserId) -> String
where
    S: tower::Service<
            paragon_client::ParagonRequest,
            Response = paragon_client::ParagonResponse,
            Error = Error,
        > + Clone,
{
    match client.fetch_user(id).await {
        Ok(user) => format!("Hello, {}!", user.name().as_deref().unwrap_or("friend")),
        Err(Error::NotFound) => "Hello, stranger!".into(),
        Err(_) => "Hello! (profile unavailable)".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let fake = FakeParagon::new();
    fake.user("ann", serde_json::json!({"id": "ann", "name": "Ann"}));
    fake.fail("bob", Error::UpstreamStatus { status: 503 });

    let cache = CacheLayer::new(
        CacheConfig::builder(Duration::from_secs(60))
            .max_entries(100)
            .build()?,
        Clock::tokio(),
    );
    let client = ParagonClient::new(
        tower::ServiceBuilder::new()
            .layer(cache)
            .service(fake.clone()),
    );

    let ann = UserId::parse("ann")?;
    assert_eq!(greeting(&client, &ann).await, "Hello, Ann!");
    assert_eq!(greeting(&client, &ann).await, "Hello, Ann!");
    assert_eq!(
        fake.calls_for("ann"),
        1,
        "the second greeting came from the cache"
    );
    assert_eq!(
        greeting(&client, &UserId::parse("bob")?).await,
        "Hello! (profile unavailable)"
    );
    assert_eq!(
        greeting(&client, &UserId::parse("carol")?).await,
        "Hello, stranger!"
    );
    println!(
        "all greetings as expected; ParagoN saw {} calls",
        fake.calls()
    );
    Ok(())
}
