//! The deterministic users the simulator serves.

use serde_json::{json, Value};

use crate::faults::splitmix64;

const FIRST_NAMES: [&str; 16] = [
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "John",
    "Katherine",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Radia",
    "Tim",
];
const LAST_NAMES: [&str; 16] = [
    "Allen",
    "Backus",
    "Cerf",
    "Dijkstra",
    "Engelbart",
    "Floyd",
    "Goldberg",
    "Hamilton",
    "Hopper",
    "Johnson",
    "Knuth",
    "Lamport",
    "Liskov",
    "Perlman",
    "Ritchie",
    "Wirth",
];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const LOCALES: [&str; 6] = ["en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR"];
const TAGS: [&str; 8] = [
    "beta",
    "early-adopter",
    "mobile",
    "newsletter",
    "partner",
    "staff",
    "trial",
    "verified",
];

/// FNV-1a: a small, stable hash (stable across Rust and crate versions, unlike
/// `std`'s hasher), so a user never changes between runs or releases.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A stream of numbers derived from one seed.
struct Digits(u64);

impl Digits {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = splitmix64(self.0);
        self.0 % below
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        // The slices are small constants, so the casts cannot truncate.
        from[self.next(from.len() as u64) as usize]
    }
}

/// The user the simulator serves for `id`: the same id always gives the same user.
///
/// ```
/// let user = paragon_sim::user_json("u1");
/// assert_eq!(user["id"], "u1");
/// assert_eq!(user, paragon_sim::user_json("u1"));
/// assert!(user["email"].as_str().is_some_and(|e| e.ends_with("@example.com")));
/// assert!(user["profile"].is_object());
/// ```
///
/// Fields: `id`, `name`, `email`, `plan` (`free`, `pro` or `enterprise`),
/// `created_at` (RFC 3339, in 2024), `tags` (an array of strings) and `profile`
/// (`{"locale": "...", "score": <int>}`).
pub fn user_json(id: &str) -> Value {
    let mut d = Digits(fnv1a(id.as_bytes()));
    let first = d.pick(&FIRST_NAMES);
    let last = d.pick(&LAST_NAMES);
    let number = d.next(1000);
    let plan = d.pick(&PLANS);
    let (month, day) = (1 + d.next(12), 1 + d.next(28));
    let (hour, minute, second) = (d.next(24), d.next(60), d.next(60));
    let tag_count = 1 + d.next(3);
    let mut tags: Vec<&str> = Vec::new();
    for _ in 0..tag_count {
        let tag = d.pick(&TAGS);
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let locale = d.pick(&LOCALES);
    let score = d.next(10_000);
    json!({
        "id": id,
        "name": format!("{first} {last}"),
        "email": format!(
            "{}.{}{number}@example.com",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase()
        ),
        "plan": plan,
        "created_at": format!("2024-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"),
        "tags": tags,
        "profile": { "locale": locale, "score": score },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_user_different_ids_differ() {
        assert_eq!(user_json("u1"), user_json("u1"));
        assert_ne!(user_json("u1"), user_json("u2"));
        // Beyond the id, at least some of 100 users differ in name.
        let names: std::collections::BTreeSet<String> = (0..100)
            .map(|i| user_json(&format!("user-{i}"))["name"].to_string())
            .collect();
        assert!(names.len() > 20, "only {} names", names.len());
    }

    #[test]
    fn user_is_stable_across_releases() {
        // Pinned so that a change to the derivation is a deliberate one.
        assert_eq!(
            user_json("u1").to_string(),
            r#"{"id":"u1","name":"Tim Ritchie","email":"tim.ritchie891@example.com","plan":"free","created_at":"2024-03-05T04:43:47Z","tags":["beta","verified","newsletter"],"profile":{"locale":"ja-JP","score":7023}}"#
        );
        assert_eq!(fnv1a(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xAF63_DC4C_8601_EC8C);
    }

    #[test]
    fn user_has_the_documented_shape() {
        let user = user_json("any id with spaces / and ünïcode");
        let obj = user.as_object().expect("object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "email",
                "plan",
                "created_at",
                "tags",
                "profile"
            ]
        );
        assert_eq!(user["id"], "any id with spaces / and ünïcode");
        assert!(PLANS.contains(&user["plan"].as_str().expect("plan")));
        let created = user["created_at"].as_str().expect("created_at");
        assert!(created.starts_with("2024-") && created.ends_with('Z') && created.len() == 20);
        let tags = user["tags"].as_array().expect("tags");
        assert!(!tags.is_empty() && tags.iter().all(Value::is_string));
        assert!(user["profile"]["locale"].is_string());
        assert!(user["profile"]["score"].is_u64());
    }
}
