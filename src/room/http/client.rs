//! The browser client, shipped in the crate.

/// The browser client: one ES module (`client.js` next to this file), no
/// dependencies, no build step, readable top to bottom. Serve it as
/// `text/javascript; charset=utf-8` (the demo serves it at
/// `GET /queue/client.js`) or bundle the file as it is.
///
/// It joins the room at `POST {base}/join`, heart-beats at
/// `POST {base}/heartbeat` with the `queue-ticket` header when each answer's
/// `retry_after_ms` says and at once when the page is looked at again,
/// sends `queue-client-time`, retries a 503 after its `Retry-After` with
/// jitter, and fails closed: only a successful answer that says
/// `admitted: true` is ever handed to the page as an admitted ticket. Its
/// options, events and texts are described in the README.
///
/// ```
/// let js = queuegate::room::http::CLIENT_JS;
/// assert!(js.contains("export class WaitingRoom"));
/// ```
pub const CLIENT_JS: &str = include_str!("client.js");

#[cfg(test)]
mod tests {
    use super::CLIENT_JS;

    #[test]
    fn is_one_module_with_no_imports() {
        assert!(CLIENT_JS.contains("export class WaitingRoom"));
        assert!(CLIENT_JS.contains("export const defaultMessages"));
        // No dependencies: nothing is imported, nothing loaded at run time.
        assert!(!CLIENT_JS
            .lines()
            .any(|l| l.trim_start().starts_with("import ")));
        assert!(!CLIENT_JS.contains("import("));
        assert!(!CLIENT_JS.contains("require("));
    }

    #[test]
    fn stays_small() {
        // The README states its size; a client that grows past this should
        // be looked at (and the README updated) on purpose.
        assert!(CLIENT_JS.len() < 16 * 1024, "{} bytes", CLIENT_JS.len());
    }
}
