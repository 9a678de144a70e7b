//! Avro in the Confluent wire format, with a schema registry: a magic byte
//! 0, the schema id (4 bytes, big-endian), then the Avro body.
//!
//! - In (`--input-format avro`): the writer's schema is fetched from the
//!   registry by id and cached, the body decoded with it, and the record
//!   handed on as JSON text (`to_json`), so that the key, event-time and
//!   numeric fields reach rules as they do from JSON, and a rule that asks
//!   for `json` gets that text. Dead letters keep the bytes as consumed.
//! - Out (`--output-format avro`): enriched records and alerts are written
//!   with a schema inferred from their shape (`from_json`), registered under
//!   the subject the naming strategy gives (`<topic>-value` by default).
//!
//! The registry client is `schema_registry_converter`'s (blocking; called
//! from worker threads, never from the async runtime).
//!
//! When the registry cannot be reached (a connection error, a timeout, HTTP
//! 502 or 503), streamhost *pauses*: the worker retries with exponential
//! backoff (0.1 s doubling to 10 s) for as long as it takes, logging each
//! failure, and goes on where it stopped. An outage of the registry is not
//! a fault of the records, and dead-lettering them would turn it into a
//! replay of everything consumed meanwhile. What the registry *answers* is
//! final: an unknown schema id is a `decode` dead letter, and an output
//! schema it refuses (incompatible) an `output-refused` one.

pub mod from_json;
pub mod to_json;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use backon::{BlockingRetryable, ExponentialBuilder};
use schema_registry_converter::blocking::avro::AvroDecoder;
use schema_registry_converter::blocking::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::record::Dest;

/// The Confluent framing's magic byte.
pub const MAGIC: u8 = 0;
/// Magic byte and schema id.
pub const HEADER: usize = 5;

/// How a registry is reached.
#[derive(Clone)]
pub struct RegistryConfig {
    pub url: String,
    /// Per request.
    pub timeout: Duration,
    /// HTTP basic authentication (user, password), for hosted registries.
    pub basic_auth: Option<(String, String)>,
}

/// Shows the user, never the password.
impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &shown(&self.url))
            .field("timeout", &self.timeout)
            .field(
                "basic_auth",
                &self
                    .basic_auth
                    .as_ref()
                    .map(|(user, _)| (user, "[redacted]")),
            )
            .finish()
    }
}

/// A registry URL as logs and errors show it: any `user:password@` in it
/// replaced by `[redacted]@`.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/').unwrap_or((rest, "")) {
            (authority, path) if authority.contains('@') => {
                let host = authority.rsplit('@').next().unwrap_or_default();
                let slash = if rest.contains('/') { "/" } else { "" };
                format!("{scheme}://[redacted]@{host}{slash}{path}")
            }
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn settings(config: &RegistryConfig) -> Result<SrSettings, String> {
    let mut builder = SrSettings::new_builder(config.url.clone());
    builder.set_timeout(config.timeout).no_proxy();
    if let Some((user, password)) = &config.basic_auth {
        builder.set_basic_authorization(user, Some(password));
    }
    builder
        .build()
        .map_err(|e| format!("schema registry {}: {e}", shown(&config.url)))
}

/// Runs `call` until it succeeds or fails for good: errors the client marks
/// retriable (the registry unreachable, 502, 503) are retried with backoff
/// without end, each logged; others are returned.
fn patiently<T>(
    what: &str,
    url: &str,
    call: impl FnMut() -> Result<T, SRCError>,
) -> Result<T, SRCError> {
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times(),
    )
    .when(|e: &SRCError| e.retriable)
    .notify(|e: &SRCError, wait: Duration| {
        tracing::warn!(registry = url, error = %e, ?wait, "Schema registry unreachable while {what}; pausing until it answers.");
    })
    .call()
}

/// Reads records in the Confluent Avro framing as JSON text.
pub struct AvroInput {
    decoder: AvroDecoder,
    url: String,
}

impl std::fmt::Debug for AvroInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroInput")
            .field("registry", &self.url)
            .finish()
    }
}

impl AvroInput {
    pub fn new(config: &RegistryConfig) -> Result<AvroInput, String> {
        Ok(AvroInput {
            decoder: AvroDecoder::new(settings(config)?),
            url: shown(&config.url),
        })
    }

    /// The record as JSON text, or why it cannot be read. Pauses while the
    /// registry cannot be reached.
    pub fn to_json(&self, bytes: &[u8]) -> Result<String, String> {
        let id = schema_id(bytes)?;
        let decoded = patiently("fetching a schema", &self.url, || {
            self.decoder.decode(Some(bytes))
        })
        .map_err(|e| explain_decode(id, &e))?;
        let mut text = String::with_capacity(bytes.len() * 2);
        to_json::push_value(&mut text, &decoded.value)?;
        if !text.starts_with('{') {
            return Err(format!(
                "schema {id} is not a record: the record is {text:.64}"
            ));
        }
        Ok(text)
    }
}

/// The schema id of a record in the Confluent framing, checking the header.
pub fn schema_id(bytes: &[u8]) -> Result<u32, String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "not in the Confluent Avro framing: {} bytes, shorter than its 5-byte header",
            bytes.len()
        ));
    }
    if bytes[0] != MAGIC {
        let hint = if bytes[0] == b'{' {
            " (it looks like JSON: is --input-format right?)"
        } else {
            ""
        };
        return Err(format!(
            "not in the Confluent Avro framing: the first byte is {:#04x}, not the magic byte 0{hint}",
            bytes[0]
        ));
    }
    Ok(u32::from_be_bytes(
        bytes[1..HEADER].try_into().expect("4 bytes"),
    ))
}

fn explain_decode(id: u32, e: &SRCError) -> String {
    if e.error.contains("404") {
        format!("schema id {id} is not in the registry ({})", describe(e))
    } else {
        format!("cannot decode with schema id {id}: {}", describe(e))
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

/// How the subject an output schema is registered under is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectStrategy {
    /// `<topic>-value` (Confluent's default, TopicNameStrategy).
    Topic,
    /// The record's full name (RecordNameStrategy).
    Record,
    /// `<topic>-<record full name>` (TopicRecordNameStrategy).
    TopicRecord,
}

impl std::str::FromStr for SubjectStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "topic" => Ok(SubjectStrategy::Topic),
            "record" => Ok(SubjectStrategy::Record),
            "topic-record" => Ok(SubjectStrategy::TopicRecord),
            _ => Err(format!(
                "{s:?} is not a subject strategy: topic, record or topic-record"
            )),
        }
    }
}

/// A registered output schema.
struct Registered {
    id: u32,
    schema: Schema,
}

/// Where an output goes, as the registry sees it.
#[derive(Clone, Debug)]
pub struct Target {
    pub topic: String,
    /// The subject set by hand, overriding the strategy.
    pub subject: Option<String>,
}

/// Writes enriched records and alerts in the Confluent Avro framing.
pub struct AvroOutput {
    settings: SrSettings,
    url: String,
    strategy: SubjectStrategy,
    enriched: Target,
    alerts: Target,
    /// By subject and schema text.
    registered: Mutex<HashMap<(String, String), Arc<Registered>>>,
}

impl std::fmt::Debug for AvroOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroOutput")
            .field("registry", &self.url)
            .field("strategy", &self.strategy)
            .field("enriched", &self.enriched)
            .field("alerts", &self.alerts)
            .finish()
    }
}

impl AvroOutput {
    pub fn new(
        config: &RegistryConfig,
        strategy: SubjectStrategy,
        enriched: Target,
        alerts: Target,
    ) -> Result<AvroOutput, String> {
        Ok(AvroOutput {
            settings: settings(config)?,
            url: shown(&config.url),
            strategy,
            enriched,
            alerts,
            registered: Mutex::new(HashMap::new()),
        })
    }

    /// An output's JSON (an object) as a framed Avro record, its schema
    /// registered first if new. Dead letters are not written here: they
    /// keep the input's bytes. Pauses while the registry cannot be reached;
    /// a schema it refuses is an error.
    pub fn encode(&self, dest: Dest, json: &[u8]) -> Result<Vec<u8>, String> {
        let (target, record) = match dest {
            Dest::Enriched => (&self.enriched, "EnrichedRecord"),
            Dest::Alerts => (&self.alerts, "Alert"),
            Dest::DeadLetter => return Ok(json.to_vec()),
        };
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("output is not JSON: {e}"))?;
        let (schema_json, value) = from_json::infer(record, &value)?;
        let text = schema_json.to_string();
        let full_name = format!("streamhost.{record}");
        let topic = &target.topic;
        let subject = match (&target.subject, self.strategy) {
            (Some(s), _) => s.clone(),
            (None, SubjectStrategy::Topic) => format!("{topic}-value"),
            (None, SubjectStrategy::Record) => full_name.clone(),
            (None, SubjectStrategy::TopicRecord) => format!("{topic}-{full_name}"),
        };
        let key = (subject, text);
        let cached = self.registered.lock().unwrap().get(&key).cloned();
        let registered = match cached {
            Some(r) => r,
            None => {
                let schema = Schema::parse_str(&key.1).map_err(|e| e.to_string())?;
                let (subject, text) = &key;
                let id = patiently("registering a schema", &self.url, || {
                    post_schema(
                        &self.settings,
                        subject.clone(),
                        SuppliedSchema::new(
                            Some(full_name.clone()),
                            SchemaType::Avro,
                            text.clone(),
                        ),
                    )
                })
                .map_err(|e| {
                    format!(
                        "the schema registry refused the {} schema for subject {subject}: {}",
                        dest.name(),
                        describe(&e)
                    )
                })?
                .id;
                tracing::info!(subject = %subject, id, "Output schema registered.");
                let r = Arc::new(Registered { id, schema });
                self.registered.lock().unwrap().insert(key, r.clone());
                r
            }
        };
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&registered.schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| format!("encoding an Avro output: {e}"))?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.push(MAGIC);
        out.extend_from_slice(&registered.id.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_registry_url_are_not_shown() {
        assert_eq!(
            shown("https://u:pw-1@registry.example.com:8081/ccompat"),
            "https://[redacted]@registry.example.com:8081/ccompat"
        );
        assert_eq!(shown("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
        let config = RegistryConfig {
            url: "http://u:pw-2@r:1".into(),
            timeout: Duration::from_secs(1),
            basic_auth: Some(("me".into(), "pw-3".into())),
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("pw-2") && !debug.contains("pw-3"),
            "{debug}"
        );
    }

    #[test]
    fn the_header_is_checked_before_the_registry_is_asked() {
        assert!(schema_id(&[0, 0, 0]).unwrap_err().contains("5-byte header"));
        let json = schema_id(br#"{"a":1}"#).unwrap_err();
        assert!(json.contains("0x7b") && json.contains("JSON"), "{json}");
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Ok(258));
    }
}
