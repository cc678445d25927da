//! Small HTTP clients: one hyper connection per request (so concurrent
//! streams are separate connections), and raw TCP for malformed requests.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::server::WAIT;

pub use http::Method;

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and, for errors, the JSON `{error, code}` shape.
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if status >= 400 {
            let v = self.json();
            assert!(v["error"].is_string() && v["code"].is_string(), "error shape: {v}");
        }
        self
    }
}

/// Sends one request on a fresh connection; returns the streaming response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect within the bound")
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("response within the bound")
        .expect("response")
}

pub fn build(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    build_as(method, Some(&addr.to_string()), path, headers, body)
}

/// A request with exactly this `Host` (None: none at all), as a browser on
/// another name, or an HTTP/1.0 tool, sends it.
pub fn build_as(
    method: Method,
    host: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("valid request")
}

/// One request, whole response.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    whole(send(addr, build(method, addr, path, headers, body)).await).await
}

/// One request with exactly this `Host` (see [`build_as`]), whole response.
pub async fn call_as(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    whole(send(addr, build_as(method, host, path, headers, body)).await).await
}

/// Reads a response's body to its end (bounded).
pub async fn whole(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body within the bound")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::GET, path, &[], Bytes::new()).await
}

pub async fn delete(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::DELETE, path, &[], Bytes::new()).await
}

pub async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    call(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).expect("json"),
    )
    .await
}

pub async fn patch_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    call(
        addr,
        Method::PATCH,
        path,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).expect("json"),
    )
    .await
}

/// Creates a process (201 expected) and returns its record.
pub async fn create(addr: SocketAddr, body: Value) -> Value {
    let r = post_json(addr, "/api/processes", &body).await;
    r.expect(201);
    r.json()
}

/// Appends output as JSON (202 expected); returns `output_bytes`.
pub async fn append(addr: SocketAddr, id: &str, content: &str) -> u64 {
    let r = post_json(
        addr,
        &format!("/api/processes/{id}/output"),
        &serde_json::json!({ "content": content }),
    )
    .await;
    r.expect(202);
    r.json()["output_bytes"].as_u64().expect("output_bytes")
}

pub async fn complete(addr: SocketAddr, id: &str) -> Value {
    let r = patch_json(
        addr,
        &format!("/api/processes/{id}"),
        &serde_json::json!({ "status": "completed" }),
    )
    .await;
    r.expect(200);
    r.json()
}

/// Writes raw bytes, returns everything the server sends until it closes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("server answers and closes within the bound")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// A client that reads nothing: a connection with a small receive buffer
/// (4 KiB) that sends `request` and stops. The server's writes to it stop
/// once the socket buffers are full.
pub async fn unread(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = tokio::time::timeout(WAIT, sock.connect(addr))
        .await
        .expect("connect within the bound")
        .expect("connect");
    s.write_all(request).await.expect("send request");
    s
}

/// An [`unread`] client that first reads up to the end of the response
/// head, and nothing more. Returns the socket and what was read (the head,
/// maybe some body).
pub async fn stalled(addr: SocketAddr, request: &str) -> (TcpStream, Vec<u8>) {
    let mut s = unread(addr, request.as_bytes()).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("response head within the bound")
            .expect("read head");
        assert!(n > 0, "closed before the head: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    (s, got)
}
