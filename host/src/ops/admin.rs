//! The admin HTTP listener (loopback by default): plugin management,
//! Prometheus metrics and health checks, on axum (served by hyper). The
//! client, `streamhost plugins ...`, is `crate::cmd::plugins`.
//!
//! - `GET /plugins`: every plugin with kind, name, version, sha256, load
//!   time, calls, failures and the last failure;
//! - `PUT /plugins/NAME[?deadline=2s&memory-mib=256]` (body: a component)
//!   installs or replaces a plugin, with its own limits if given, and keeps
//!   it on disk (see `Registry::put`); with `shadow=true` or `canary=10`
//!   (percent of keys) it starts a trial beside the serving version
//!   instead (see `rules::trial`);
//! - `PUT /plugins/NAME/config` (body: JSON `{"set": {KEY: VALUE},
//!   "secrets": {KEY: VALUE}, "unset": [KEY]}`) changes a plugin's own
//!   configuration: the plugin checks it in `describe()`, and it serves
//!   from the next batch, kept on disk first (see `Registry::configure`),
//!   or goes on trial with `shadow=true` or `canary=10`;
//! - `POST /plugins/NAME/promote` and `POST /plugins/NAME/rollback` end a
//!   trial; `DELETE /plugins/NAME` removes a plugin. Every change needs
//!   `Authorization: Bearer TOKEN`; with no token configured changes are
//!   refused outright;
//! - `GET /keys/{key}[?readings=N]`: what this process holds for one key
//!   (its windows, newest readings, open alerts, table rows), or which
//!   partition and group member hold it (see `super::keys`);
//! - `GET /metrics`, `GET /healthz`, `GET /readyz`;
//! - `GET /`: the console, a read-only page that polls `GET /console/state`.
//!
//! Limits: request heads must arrive within 10 s, whole requests (a
//! component upload included) within 120 s, and bodies are at most 256 MiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower_http::timeout::TimeoutLayer;

use super::keys::{DEFAULT_READINGS, KeySource};
use super::metrics::Metrics;
use crate::rules::registry::{ChangeError, ConfigChange, Configured, PluginLimits, Registry};
use crate::rules::trial::Mode;

/// Largest request body accepted (a component).
const MAX_BODY: usize = 256 << 20;
/// Longest wait for a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole request may take (compiling a Python component takes
/// tens of seconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The admin listener's state: what its routes read and change.
pub struct Admin {
    /// What the console says about this process (topics, group).
    pub about: serde_json::Value,
    /// The plugins, read and changed through `/plugins`.
    pub registry: Arc<Registry>,
    /// The counters behind `/metrics`, `/readyz` and the console.
    pub metrics: Arc<Metrics>,
    /// The bearer token changes need; `None` refuses every change.
    pub token: Option<String>,
    /// What `GET /keys/{key}` asks, once the workers have started.
    pub keys: KeySlot,
}

/// Where the key inspector's source is put once the job has started its
/// workers (after the admin API, which serves from the start).
pub type KeySlot = Arc<std::sync::OnceLock<Box<dyn KeySource>>>;

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(console_page))
        .route("/console/state", get(console_state))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/keys", get(no_key))
        .route("/keys/", get(no_key))
        .route("/keys/{*key}", get(inspect_key))
        .route("/plugins", get(list))
        .route("/plugins/{name}", put(put_plugin).delete(remove_plugin))
        .route("/plugins/{name}/config", put(configure))
        .route("/plugins/{name}/{action}", post(end_trial))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(admin)
}

/// Binds the listener; returns the bound address (the port may be 0).
pub async fn serve(admin: Arc<Admin>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "Admin API listening.");
    let app = router(admin);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT);
                if let Err(error) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "Admin connection failed.");
                }
            });
        }
    });
    Ok(bound)
}

/// The console page (read-only; every change stays behind the token).
async fn console_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        super::console::PAGE,
    )
        .into_response()
}

/// What the console page polls: the console's state, the plugins and this
/// process.
async fn console_state(State(admin): State<Arc<Admin>>) -> Response {
    let mut state = admin.metrics.console.state();
    state["plugins"] = serde_json::to_value(admin.registry.list()).expect("serializable");
    state["about"] = admin.about.clone();
    state["open_alerts"] = admin.metrics.firing.listed();
    axum::Json(state).into_response()
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    if admin.metrics.ready() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for partitions or plugins\n",
        )
            .into_response()
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

/// The query of `GET /keys/{key}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    readings: Option<usize>,
}

async fn no_key() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no key given: GET /keys/KEY (URL-encoded)",
    )
}

/// `GET /keys/{key}`: asks the workers between their batches, and Kafka
/// for the partition's owner, off the async workers.
async fn inspect_key(
    State(admin): State<Arc<Admin>>,
    key: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let key = match key {
        Ok(Path(key)) => key,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the key: {}", e.body_text()),
            );
        }
    };
    let readings = match query {
        Ok(Query(q)) => q.readings.unwrap_or(DEFAULT_READINGS),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if key.is_empty() {
        return no_key().await;
    }
    let slot = admin.keys.clone();
    let done = tokio::task::spawn_blocking(move || {
        slot.get()
            .map(|source| super::keys::answer(source.as_ref(), &key, readings))
    })
    .await;
    match done {
        Ok(Some(Ok(value))) => axum::Json(value).into_response(),
        Ok(Some(Err(e))) => error(StatusCode::NOT_FOUND, e),
        Ok(None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the workers are not running yet",
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn list(State(admin): State<Arc<Admin>>) -> Response {
    axum::Json(admin.registry.list()).into_response()
}

/// Token check for changing calls: compares in constant time.
fn authorized(admin: &Admin, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &admin.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "changing plugins through the API needs --admin-token (or STREAMHOST_ADMIN_TOKEN)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    let want = token.as_bytes();
    let same = given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

/// The query of `PUT /plugins/NAME`: the plugin's own limits.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PutQuery {
    deadline: Option<String>,
    memory_mib: Option<usize>,
    /// Try it beside the serving version, its outputs not routed.
    #[serde(default)]
    shadow: bool,
    /// Try it on this percentage of keys (`10` or `10%`).
    canary: Option<String>,
}

/// A canary share: `10`, `10%` or `2.5%`.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!(
            "canary share {text:?}: give a percentage above 0 and at most 100, like 10%"
        )),
    }
}

async fn put_plugin(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&admin, &headers) {
        return r;
    }
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let deadline = match query.deadline.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("deadline: {e}")),
    };
    let limits = PluginLimits {
        deadline,
        memory_mib: query.memory_mib,
    };
    let mode = match trial_mode(query.shadow, query.canary.as_deref()) {
        Ok(mode) => mode,
        Err(r) => return r,
    };
    let registry = admin.registry.clone();
    // Compiling may take seconds (Python, JavaScript components): off the
    // async workers.
    let done = tokio::task::spawn_blocking(move || match mode {
        None => registry
            .put(&name, &body, limits)
            .map(|p| serde_json::to_value(p).expect("serializable")),
        Some(mode) => registry
            .try_candidate(&name, &body, limits, mode)
            .map(|info| serde_json::json!({ "trial": mode.to_string(), "candidate": info })),
    })
    .await;
    answer(done.map_err(|e| e.to_string()))
}

/// The trial a change asks for, if any.
fn trial_mode(shadow: bool, canary: Option<&str>) -> Result<Option<Mode>, Response> {
    match (shadow, canary.map(parse_percent)) {
        (false, None) => Ok(None),
        (true, None) => Ok(Some(Mode::Shadow)),
        (false, Some(Ok(percent))) => Ok(Some(Mode::Canary { percent })),
        (false, Some(Err(e))) => Err(error(StatusCode::BAD_REQUEST, e)),
        (true, Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "shadow and canary exclude each other",
        )),
    }
}

/// The query of `PUT /plugins/NAME/config`: a trial, if any.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialQuery {
    #[serde(default)]
    shadow: bool,
    canary: Option<String>,
}

/// `PUT /plugins/NAME/config`: changes a plugin's own configuration.
async fn configure(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    query: Result<Query<TrialQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&admin, &headers) {
        return r;
    }
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let mode = match trial_mode(query.shadow, query.canary.as_deref()) {
        Ok(mode) => mode,
        Err(r) => return r,
    };
    let change: ConfigChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("configuration change: {e}"),
            );
        }
    };
    let registry = admin.registry.clone();
    // `describe()` on a new instance: off the async workers.
    let done = tokio::task::spawn_blocking(move || {
        registry
            .configure(&name, &change, mode)
            .map(|done| match done {
                Configured::Serving(put) => serde_json::json!({ "configured": put }),
                Configured::OnTrial(info) => serde_json::json!({
                    "trial": mode.map(|m| m.to_string()),
                    "candidate": info,
                }),
            })
    })
    .await;
    answer(done.map_err(|e| e.to_string()))
}

/// The answer to a change.
fn answer(done: Result<Result<serde_json::Value, ChangeError>, String>) -> Response {
    match done {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(e @ (ChangeError::NotFound(_) | ChangeError::NoTrial(_)))) => {
            error(StatusCode::NOT_FOUND, e)
        }
        Ok(Err(e @ ChangeError::Store(_))) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /plugins/NAME/promote` and `POST /plugins/NAME/rollback`: ends
/// the trial beside plugin `name`, off the async workers (a promotion
/// writes a file).
async fn end_trial(
    State(admin): State<Arc<Admin>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&admin, &headers) {
        return r;
    }
    let registry = admin.registry.clone();
    let done = tokio::task::spawn_blocking(move || match action.as_str() {
        "promote" => Some(
            registry
                .promote(&name)
                .map(|p| serde_json::json!({ "promoted": p })),
        ),
        "rollback" => Some(
            registry
                .rollback(&name)
                .map(|info| serde_json::json!({ "rolled_back": info })),
        ),
        _ => None,
    })
    .await;
    match done {
        Ok(None) => error(StatusCode::NOT_FOUND, "not found"),
        Ok(Some(done)) => answer(Ok(done)),
        Err(e) => answer(Err(e.to_string())),
    }
}

async fn remove_plugin(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&admin, &headers) {
        return r;
    }
    match admin.registry.remove(&name) {
        Ok(()) => axum::Json(serde_json::json!({ "removed": name })).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}
