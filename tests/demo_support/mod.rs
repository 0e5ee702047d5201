//! Starts the booking demo (`examples/reservation.rs`, included as a
//! module) on an ephemeral 127.0.0.1 port and talks to it over real HTTP.
#![allow(dead_code)]

#[path = "../../examples/reservation.rs"]
pub mod reservation;

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use reservation::App;

/// The secret the tests start the demo with (so they can forge with it).
pub const SECRET_HEX: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
pub const QUEUE: &str = "vaccine-53-54";

pub struct Demo {
    pub base: String,
    pub app: Arc<App>,
    pub http: Client<HttpConnector, Full<Bytes>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn start(extra: &[&str]) -> Demo {
    let mut args: Vec<String> = ["--addr", "127.0.0.1:0", "--secret", SECRET_HEX]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = reservation::Config::parse(args, None).expect("valid flags");
    let (app, router) = reservation::build(&config).expect("demo builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(reservation::serve(app.clone(), router, listener));
    let http = Client::builder(TokioExecutor::new()).build_http();
    Demo {
        base,
        app,
        http,
        server,
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// The problem document's `code`, checking the media type.
    pub fn code(&self) -> String {
        assert_eq!(
            self.headers[http::header::CONTENT_TYPE],
            "application/problem+json",
            "{}",
            self.body
        );
        self.json()["code"].as_str().unwrap().to_owned()
    }
}

impl Demo {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let res = self.http.request(req).await.expect("the demo answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    pub async fn metrics(&self) -> String {
        self.send("GET", "/metrics", &[], "").await.body
    }

    /// The value of one Prometheus series (exact name with labels).
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    pub async fn rejections(&self, code: &str) -> u64 {
        self.metric(&format!("queuegate_rejections_total{{code=\"{code}\"}}"))
            .await
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A browser-like client: keeps its session cookie and latest ticket, and
/// sends its clock on every call.
#[derive(Debug, Clone, Default)]
pub struct Person {
    pub cookie: Option<String>,
    pub ticket: Option<String>,
    pub last: Option<serde_json::Value>,
    /// Added to the client's clock reading (a wrong or moved device clock).
    pub clock_offset_ms: i64,
}

impl Person {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn headers(&self, with_ticket: bool) -> Vec<(&'static str, String)> {
        let mut h = vec![(
            "queue-client-time",
            (now_ms() + self.clock_offset_ms).to_string(),
        )];
        if let Some(c) = &self.cookie {
            h.push(("cookie", format!("qg_session={c}")));
        }
        if with_ticket {
            if let Some(t) = &self.ticket {
                h.push(("queue-ticket", t.clone()));
            }
        }
        h
    }

    fn take(&mut self, r: &Reply) {
        if let Some(sc) = r.headers.get(http::header::SET_COOKIE) {
            let sc = sc.to_str().unwrap();
            assert!(
                sc.contains("HttpOnly") && sc.contains("SameSite=Strict") && sc.contains("Path=/")
            );
            let v = sc
                .split(';')
                .next()
                .unwrap()
                .strip_prefix("qg_session=")
                .unwrap();
            self.cookie = Some(v.to_owned());
        }
        if r.status == 200 {
            let j = r.json();
            if let Some(t) = j["ticket"].as_str() {
                self.ticket = Some(t.to_owned());
            }
            self.last = Some(j);
        }
    }

    pub async fn join(&mut self, demo: &Demo) -> Reply {
        let r = demo
            .send("POST", "/queue/join", &self.headers(false), "")
            .await;
        self.take(&r);
        r
    }

    pub async fn beat(&mut self, demo: &Demo) -> Reply {
        let r = demo
            .send("POST", "/queue/heartbeat", &self.headers(true), "")
            .await;
        self.take(&r);
        r
    }

    pub async fn slots(&self, demo: &Demo) -> Reply {
        demo.send("GET", "/slots", &self.headers(true), "").await
    }

    pub async fn reserve(&self, demo: &Demo) -> Reply {
        demo.send("POST", "/reserve", &self.headers(true), r#"{"slot":"S23"}"#)
            .await
    }

    /// Heart-beats (a bounded number of times, 50 ms apart) until admitted.
    pub async fn beat_until_admitted(&mut self, demo: &Demo) {
        for _ in 0..100 {
            let r = self.beat(demo).await;
            assert_eq!(r.status, 200, "{}", r.body);
            if self.admitted() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("not admitted after 100 heartbeats");
    }

    pub fn admitted(&self) -> bool {
        self.last.as_ref().is_some_and(|j| j["admitted"] == true)
    }

    pub fn position(&self) -> u64 {
        self.last.as_ref().unwrap()["position"].as_u64().unwrap()
    }
}
