//! A stand-in for a schema registry, for tests and the demo only: no
//! registry server can be installed on the machines streamhost is developed
//! on (Confluent's and Apicurio's come as JVM downloads or images, Karapace
//! is not on PyPI).
//!
//! It speaks the subset of the Confluent Schema Registry REST API that
//! registry clients (here `schema_registry_converter`) use, for Avro, in
//! memory:
//! - `POST /subjects/{subject}/versions`: register (or find) a schema; a
//!   schema the subject's compatibility level refuses gets 409;
//! - `GET /schemas/ids/{id}`: a schema by id;
//! - `GET /subjects`, `GET /subjects/{subject}/versions`,
//!   `GET /subjects/{subject}/versions/{version|latest}`;
//! - `POST /compatibility/subjects/{subject}/versions/latest`;
//! - `GET|PUT /config` and `/config/{subject}`: the compatibility level,
//!   `BACKWARD` (the default, as Confluent's), `FORWARD`, `FULL` or `NONE`,
//!   checked against the latest version with apache-avro's schema
//!   resolution rules.
//!
//! Ids are global and a schema registered twice (under any subject) keeps
//! its id, as in Confluent's registry. Nothing is persisted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "A stand-in schema registry (Confluent REST API subset), for tests and demos")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Write the URL it serves on to this file once listening.
    #[arg(long)]
    address_file: Option<PathBuf>,
}

#[derive(Default)]
struct Registry {
    /// Schema text by id (ids start at 1).
    schemas: Vec<String>,
    /// Per subject, the ids of its versions in order.
    subjects: HashMap<String, Vec<u32>>,
    /// Compatibility level per subject, and the global one under "".
    levels: HashMap<String, String>,
}

type Shared = Arc<Mutex<Registry>>;

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error_code": code, "message": message.into()})),
    )
        .into_response()
}

fn parse_body(body: &str) -> Result<(String, Schema), Response> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid JSON: {e}"),
        )
    })?;
    if let Some(t) = v["schemaType"].as_str() {
        if t != "AVRO" {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("Only AVRO schemas are served by this stand-in, not {t}"),
            ));
        }
    }
    let text = v["schema"].as_str().ok_or_else(|| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "No schema in the request",
        )
    })?;
    let schema = Schema::parse_str(text).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {e}"),
        )
    })?;
    Ok((text.to_string(), schema))
}

impl Registry {
    fn level(&self, subject: &str) -> String {
        self.levels
            .get(subject)
            .or_else(|| self.levels.get(""))
            .cloned()
            .unwrap_or_else(|| "BACKWARD".into())
    }

    fn latest(&self, subject: &str) -> Option<(u32, u32)> {
        let versions = self.subjects.get(subject)?;
        versions.last().map(|&id| (versions.len() as u32, id))
    }

    fn schema(&self, id: u32) -> Option<&String> {
        self.schemas.get((id as usize).checked_sub(1)?)
    }

    /// Whether `new` may follow the subject's latest version.
    fn compatible(&self, subject: &str, new: &Schema) -> Result<(), String> {
        let Some((_, id)) = self.latest(subject) else {
            return Ok(());
        };
        let old = Schema::parse_str(self.schema(id).expect("registered")).expect("parsed before");
        let backward = || SchemaCompatibility::can_read(&old, new).map(|_| ());
        let forward = || SchemaCompatibility::can_read(new, &old).map(|_| ());
        let result = match self.level(subject).as_str() {
            "NONE" => Ok(()),
            "FORWARD" => forward(),
            "FULL" => backward().and_then(|_| forward()),
            _ => backward(),
        };
        result.map_err(|e| e.to_string())
    }
}

async fn register(State(r): State<Shared>, Path(subject): Path<String>, body: String) -> Response {
    let (text, schema) = match parse_body(&body) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let canonical = schema.canonical_form();
    let mut r = r.lock().unwrap();
    let same = |t: &String| Schema::parse_str(t).is_ok_and(|s| s.canonical_form() == canonical);
    let known = r.schemas.iter().position(same).map(|i| i as u32 + 1);
    if let Some(id) = known {
        if r.subjects.get(&subject).is_some_and(|v| v.contains(&id)) {
            return axum::Json(json!({"id": id})).into_response();
        }
    }
    if let Err(why) = r.compatible(&subject, &schema) {
        return error(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({} compatibility): {why}",
                r.level(&subject)
            ),
        );
    }
    let id = match known {
        Some(id) => id,
        None => {
            r.schemas.push(text);
            r.schemas.len() as u32
        }
    };
    r.subjects.entry(subject).or_default().push(id);
    axum::Json(json!({"id": id})).into_response()
}

async fn by_id(State(r): State<Shared>, Path(id): Path<u32>) -> Response {
    match r.lock().unwrap().schema(id) {
        Some(text) => axum::Json(json!({"schema": text})).into_response(),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn subjects(State(r): State<Shared>) -> Response {
    let mut names: Vec<String> = r.lock().unwrap().subjects.keys().cloned().collect();
    names.sort();
    axum::Json(json!(names)).into_response()
}

async fn versions(State(r): State<Shared>, Path(subject): Path<String>) -> Response {
    match r.lock().unwrap().subjects.get(&subject) {
        Some(v) => axum::Json(json!((1..=v.len()).collect::<Vec<_>>())).into_response(),
        None => error(StatusCode::NOT_FOUND, 40401, "Subject not found"),
    }
}

async fn version(
    State(r): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let r = r.lock().unwrap();
    let Some(ids) = r.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    };
    let n = if version == "latest" {
        ids.len()
    } else {
        match version.parse::<usize>() {
            Ok(n) if (1..=ids.len()).contains(&n) => n,
            _ => return error(StatusCode::NOT_FOUND, 40402, "Version not found"),
        }
    };
    let id = ids[n - 1];
    axum::Json(json!({
        "subject": subject,
        "version": n,
        "id": id,
        "schema": r.schema(id),
    }))
    .into_response()
}

async fn check(State(r): State<Shared>, Path(subject): Path<String>, body: String) -> Response {
    let (_, schema) = match parse_body(&body) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let r = r.lock().unwrap();
    axum::Json(json!({"is_compatible": r.compatible(&subject, &schema).is_ok()})).into_response()
}

fn level_of(r: &Shared, subject: &str) -> Response {
    axum::Json(json!({"compatibilityLevel": r.lock().unwrap().level(subject)})).into_response()
}

fn set_level_of(r: &Shared, subject: String, body: &str) -> Response {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    match v["compatibility"].as_str() {
        Some(level @ ("BACKWARD" | "FORWARD" | "FULL" | "NONE")) => {
            r.lock().unwrap().levels.insert(subject, level.to_string());
            axum::Json(json!({"compatibility": level})).into_response()
        }
        _ => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level (this stand-in knows BACKWARD, FORWARD, FULL, NONE)",
        ),
    }
}

async fn global_level(State(r): State<Shared>) -> Response {
    level_of(&r, "")
}

async fn subject_level(State(r): State<Shared>, Path(subject): Path<String>) -> Response {
    level_of(&r, &subject)
}

async fn set_global_level(State(r): State<Shared>, body: String) -> Response {
    set_level_of(&r, String::new(), &body)
}

async fn set_subject_level(
    State(r): State<Shared>,
    Path(subject): Path<String>,
    body: String,
) -> Response {
    set_level_of(&r, subject, &body)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}/versions", post(register).get(versions))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(by_id))
        .route(
            "/compatibility/subjects/{subject}/versions/latest",
            post(check),
        )
        .route("/config", get(global_level).put(set_global_level))
        .route(
            "/config/{subject}",
            get(subject_level).put(set_subject_level),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("schema registry stand-in on {url}");
    if let Some(file) = &args.address_file {
        std::fs::write(file, &url)?;
    }
    axum::serve(listener, app).await?;
    Ok(())
}
