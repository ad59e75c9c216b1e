//! A Server-Sent Events client for the tests: reads a `text/event-stream` answer as it comes, one
//! event at a time, each event's data checked against openapi.yaml's CallbackEvent.

use super::spec::{spec, Direction};
use super::wait::within_patience;
use super::TestApp;

pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

/// One event: its `id:` and its `data:` as JSON.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: i32,
    pub data: serde_json::Value,
}

impl SseStream {
    /// Opens `path` as `token`, resuming after `last_event_id` when given; asserts a 200 event stream.
    pub async fn open(app: &TestApp, path: &str, token: &str, last_event_id: Option<i32>) -> SseStream {
        let mut request = app.http.get(app.url(path)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = app.exec(request).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseStream { response, buffer: String::new() }
    }

    /// The next event (keep-alive comments skipped), or None once the server ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().expect("numeric event ids"));
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                let Some(id) = id else { continue }; // a comment (keep-alive)
                let data: serde_json::Value = serde_json::from_str(&data).expect("event data is JSON");
                let schema = serde_json::json!({"$ref": "#/components/schemas/CallbackEvent"});
                spec().assert_valid("a live stream's event", &schema, Direction::Response, &data);
                return Some(SseEvent { id, data });
            }
            let chunk =
                within_patience("the next event on the stream", self.response.chunk()).await.expect("the stream");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => {
                    assert!(self.buffer.trim().is_empty(), "the stream ended inside an event: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// Every event until the server ends the stream.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}
