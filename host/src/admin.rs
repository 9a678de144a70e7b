//! The admin HTTP listener (loopback by default): plugin management,
//! Prometheus metrics and health checks.
//!
//! - `GET /plugins`: every plugin with kind, name, version, sha256, load
//!   time, calls, failures and the last failure;
//! - `PUT /plugins/NAME` (body: a component) installs or replaces a plugin;
//!   `DELETE /plugins/NAME` removes one. Both need `Authorization: Bearer
//!   TOKEN`; with no token configured they are refused outright;
//! - `GET /metrics`, `GET /healthz`, `GET /readyz`.
//!
//! A deliberately small HTTP/1.1 server (one request per connection): the
//! API has five routes and one client at a time, and this keeps an HTTP
//! framework out of the dependency tree.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;
use crate::registry::{ChangeError, Registry};

/// Largest request body accepted (a component).
const MAX_BODY: usize = 256 << 20;

pub struct Admin {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn json(status: u16, body: serde_json::Value) -> Response {
    Response { status, content_type: "application/json", body: body.to_string() }
}

fn error(status: u16, message: impl std::fmt::Display) -> Response {
    json(status, serde_json::json!({ "error": message.to_string() }))
}

/// Binds the listener; returns the bound address (the port may be 0).
pub async fn serve(admin: Arc<Admin>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "Admin API listening.");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let admin = admin.clone();
            tokio::spawn(async move {
                if let Err(error) = handle(&admin, stream).await {
                    tracing::debug!(%error, "Admin connection failed.");
                }
            });
        }
    });
    Ok(bound)
}

async fn handle(admin: &Admin, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    let header_end = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return respond(&mut stream, error(431, "request head too large")).await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (request.next().unwrap_or_default().to_string(), request.next().unwrap_or_default().to_string());
    let mut content_length = 0usize;
    let mut authorization = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    if content_length > MAX_BODY {
        return respond(&mut stream, error(413, "body too large")).await;
    }
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < content_length {
        let mut chunk = vec![0u8; (content_length - body.len()).min(1 << 20)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let response = route(admin, &method, &path, authorization.as_deref(), body).await;
    respond(&mut stream, response).await
}

/// Token check for changing calls: compares in constant time.
fn authorized(admin: &Admin, header: Option<&str>) -> Result<(), Response> {
    let Some(token) = &admin.token else {
        return Err(error(403, "changing plugins through the API needs --admin-token (or STREAMHOST_ADMIN_TOKEN)"));
    };
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or_default().as_bytes();
    let want = token.as_bytes();
    let same = given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(error(401, "missing or wrong bearer token")) }
}

async fn route(admin: &Admin, method: &str, path: &str, auth: Option<&str>, body: Vec<u8>) -> Response {
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/healthz") => Response { status: 200, content_type: "text/plain", body: "ok\n".into() },
        ("GET", "/readyz") => {
            if admin.metrics.ready() {
                Response { status: 200, content_type: "text/plain", body: "ready\n".into() }
            } else {
                Response { status: 503, content_type: "text/plain", body: "not ready: waiting for partitions or plugins\n".into() }
            }
        }
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: admin.metrics.render(Some(&admin.registry)),
        },
        ("GET", "/plugins") => json(200, serde_json::to_value(admin.registry.list()).unwrap_or_default()),
        (m @ ("PUT" | "DELETE"), p) if p.starts_with("/plugins/") => {
            if let Err(r) = authorized(admin, auth) {
                return r;
            }
            let name = p["/plugins/".len()..].to_string();
            if name.is_empty() || name.contains('/') {
                return error(400, "expected /plugins/NAME");
            }
            let registry = admin.registry.clone();
            if m == "PUT" {
                // Compiling may take seconds (Python, JavaScript components):
                // off the async workers.
                let result = tokio::task::spawn_blocking(move || registry.put(&name, &body)).await;
                match result {
                    Ok(Ok(info)) => json(200, serde_json::to_value(info).unwrap_or_default()),
                    Ok(Err(e @ ChangeError::NotFound(_))) => error(404, e),
                    Ok(Err(e)) => error(422, e),
                    Err(e) => error(500, e),
                }
            } else {
                match registry.remove(&name) {
                    Ok(()) => json(200, serde_json::json!({ "removed": name })),
                    Err(e) => error(404, e),
                }
            }
        }
        (_, "/plugins" | "/metrics" | "/healthz" | "/readyz") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

async fn respond(stream: &mut TcpStream, r: Response) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(r.body.as_bytes()).await?;
    stream.shutdown().await
}

/// A tiny blocking HTTP client for `streamhost plugins ...`.
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| anyhow::anyhow!("connecting to {addr}: {e}"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}
