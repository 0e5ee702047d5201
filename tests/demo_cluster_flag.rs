//! The demo's `--redis-cluster` flag: parsed beside `--redis` (one of the
//! two), never printed, refused by a build without Redis support or by the
//! in-memory build, and refused with a reason while the replay store
//! cannot run on a Cluster.

mod demo_support;

use demo_support::reservation::Config;

const SEEDS: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

fn parse(flags: &[&str]) -> Result<Config, String> {
    Config::parse(flags.iter().map(|s| s.to_string()), None)
}

#[test]
fn the_flag_parses_and_is_refused_where_it_cannot_work() {
    let c = parse(&["--redis-cluster", SEEDS]).unwrap();
    assert_eq!(c.redis_cluster.as_ref().map(Vec::len), Some(3));
    assert!(parse(&["--redis-cluster", "127.0.0.1:7000"])
        .unwrap_err()
        .contains("redis:// URLs"));
    assert!(parse(&[
        "--redis",
        "redis://127.0.0.1:6379",
        "--redis-cluster",
        SEEDS
    ])
    .unwrap_err()
    .contains("one of them"));
    let secret = parse(&["--redis-cluster", "redis://:hunter2@127.0.0.1:7000"]).unwrap();
    assert!(!format!("{secret:?}").contains("hunter2"));
    // The synchronous, in-memory build refuses it.
    let err = demo_support::reservation::build(&c).err().unwrap();
    assert!(err.starts_with("--redis"), "{err}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_build_without_redis_refuses_it() {
    let c = parse(&["--redis-cluster", SEEDS]).unwrap();
    let err = demo_support::reservation::build_async(&c)
        .await
        .err()
        .unwrap();
    assert!(err.contains("--features redis"), "{err}");
}

#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn with_redis_it_reaches_the_cluster_then_refuses_for_the_replay_store() {
    let c = parse(&["--redis-cluster", SEEDS]).unwrap();
    let err = demo_support::reservation::build_async(&c)
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("replay store does not support Redis Cluster"),
        "{err}"
    );
}
