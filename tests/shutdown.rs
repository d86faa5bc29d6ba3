//! A node told to stop (SIGTERM) stops, even while clients follow its
//! endless SSE streams: graceful shutdown gives open connections a few
//! seconds, then closes them (it used to wait for them forever).

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_with_an_sse_follower() {
    let mut c = Cluster::formed(1, 1, &[]).await;
    let stream = c
        .http
        .get(c.nodes[0].url("/v1/events/stream"))
        .send()
        .await
        .expect("open the events stream");
    assert_eq!(stream.status(), 200);
    let start = Instant::now();
    // terminate() fails the test if the node is not gone within 15 s.
    let status = c.terminate(0);
    let took = start.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        c.log_tails(20)
    );
    assert!(took < Duration::from_secs(12), "stopped after {took:?}");
    assert!(
        c.log(0).contains("closing them"),
        "the stream should have held the shutdown until the drain deadline"
    );
    drop(stream);
}
