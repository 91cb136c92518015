//! Shutdown under load (SECURITY.md §6): SIGTERM while 200 requests are in flight at
//! ParagoN loses none of them; the process then exits 0.

mod common;

use common::{start_sim, EdgeProcess, WAIT};
use paragon_sim::{Faults, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_200_requests_in_flight_loses_none() {
    let sim = start_sim(SimConfig {
        faults: Faults {
            latency: Some("1500ms".into()),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let config = format!(
        "[server]\nshutdown_grace = \"10s\"\n[upstream]\nbase_url = \"{}\"\ntimeout = \"5s\"\n\
         [rate_limit]\nenabled = false\n",
        sim.base_url()
    );
    let edge = EdgeProcess::start("shutdown-load", &config, &[("RUST_LOG", "info")]).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let http = http.clone();
            let url = edge.url(&format!("/v1/users/drain-{i}"));
            tokio::spawn(async move {
                let r = http.get(url).send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((i, status, body))
            })
        })
        .collect();

    // All 200 are at ParagoN, none answered yet: now SIGTERM.
    common::wait_until("all 200 requests to be in flight at ParagoN", || {
        let ok = sim.sim().served_total() == 200;
        async move { ok }
    })
    .await;
    let answered: u64 = sim.sim().stats().by_status.values().sum();
    assert_eq!(answered, 0, "some requests finished before the signal");
    edge.sigterm();

    let mut lost = Vec::new();
    for t in tasks {
        match t.await.expect("no task panicked") {
            Ok((i, 200, body)) => {
                let want = paragon_sim::user_json(&format!("drain-{i}")).to_string();
                if body != want.as_bytes() {
                    lost.push(format!("drain-{i}: wrong body"));
                }
            }
            Ok((i, status, body)) => lost.push(format!(
                "drain-{i}: {status} {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => lost.push(e),
        }
    }
    let mut edge = edge;
    let (exit, log) = edge.wait().await;
    assert!(
        lost.is_empty(),
        "{} lost:\n{}\n{log}",
        lost.len(),
        lost.join("\n")
    );
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("paragon-edge stopped"), "{log}");
    // And it no longer accepts.
    assert!(tokio::net::TcpStream::connect(edge.addr).await.is_err());
}
