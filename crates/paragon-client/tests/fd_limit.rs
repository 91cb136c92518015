//! A process out of file descriptors: the transport says the fault is ours
//! (`Error::Local`), not ParagoN's, so the breaker does not count it. Alone in its own
//! test binary, because it lowers the whole process's descriptor limit for a moment.

#![cfg(target_os = "linux")]

mod common;

use common::*;
use paragon_client::{Error, ParagonClient, UserId};

/// Lowers the soft `RLIMIT_NOFILE` and fills every descriptor left below it; both
/// undone on drop.
struct Exhausted {
    saved: (u64, u64),
    _held: Vec<std::fs::File>,
}

impl Exhausted {
    fn now() -> Exhausted {
        let saved = rlimit::Resource::NOFILE.get().expect("getrlimit");
        let highest = std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .expect("some descriptor is open");
        rlimit::Resource::NOFILE
            .set(highest + 8, saved.1)
            .expect("lowering the soft limit");
        let mut held = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(24), "not EMFILE: {e}");
                    break;
                }
            }
        }
        Exhausted { saved, _held: held }
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        let _ = rlimit::Resource::NOFILE.set(self.saved.0, self.saved.1);
    }
}

#[tokio::test]
async fn out_of_descriptors_is_a_local_error_that_names_it_and_not_a_paragon_failure() {
    let server = serve(|_| json_ok(r#"{"id":"u1"}"#)).await;
    let client = ParagonClient::new(transport(&server.url, |_| {}));
    let id = UserId::parse("u1").unwrap();

    let exhausted = Exhausted::now();
    let e = client.fetch_user(&id).await.unwrap_err();
    drop(exhausted);

    let Error::Local(cause) = &e else {
        panic!("not a local error: {e:?}")
    };
    assert!(cause.contains("os error 24"), "{cause}");
    assert!(!e.is_upstream_failure());
    // With descriptors back, the same client reaches ParagoN.
    assert!(client.fetch_user(&id).await.is_ok());
}
