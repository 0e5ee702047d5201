//! A `redis-server` whose wall clock is really skewed, for the tests of
//! what a wrong Redis clock does (`tests/demo_clock.rs`,
//! `tests/redis_clock_skew.rs`): the shim `tests/demo_support/skewed_clock.c`
//! is built with `cc` and preloaded (libfaketime hangs under the jemalloc
//! Debian's redis-server uses). A missing `cc` or `redis-server` fails the
//! test with a message.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// A `redis-server` on a free port whose wall clock is moved by a
/// preloaded shim; killed on drop.
pub struct SkewedRedis {
    child: Child,
    pub url: String,
    _dir: TempDir,
}

impl SkewedRedis {
    pub fn start(skew_ms: i64) -> Self {
        let dir = TempDir::new();
        let shim = dir.0.join("libskewed_clock.so");
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo_support/skewed_clock.c");
        let built = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&shim)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| {
                panic!("this test needs a C compiler `cc` on PATH to build its clock shim: {e}")
            });
        assert!(built.success(), "cc could not build {}", source.display());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .env("LD_PRELOAD", &shim)
            .env("SKEWED_CLOCK_MS", skew_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs the redis-server binary on PATH");
        let redis = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the skewed redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// Redis's `TIME` minus this machine's clock (ms), read directly.
    pub async fn skew_ms(&self) -> i64 {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the skewed redis-server");
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        secs * 1_000 + micros / 1_000 - now_ms()
    }
}

impl Drop for SkewedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "queuegate-skewed-redis-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
