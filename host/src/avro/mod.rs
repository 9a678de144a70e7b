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

/// Why a record could not be read as Avro, or an output written as Avro.
/// The message goes into the dead letter's reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry client could not be set up from its settings.
    #[error("schema registry {url}: {reason}")]
    Registry {
        /// The registry, as logs show it (without credentials).
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// Shorter than the framing's header.
    #[error("not in the Confluent Avro framing: {len} bytes, shorter than its 5-byte header")]
    TooShort {
        /// The record's length.
        len: usize,
    },
    /// Not starting with the framing's magic byte.
    #[error(
        "not in the Confluent Avro framing: the first byte is {first:#04x}, not the magic byte 0{}",
        json_hint(.first)
    )]
    NoMagicByte {
        /// The record's first byte.
        first: u8,
    },
    /// The registry does not know the record's schema id.
    #[error("schema id {id} is not in the registry ({detail})")]
    SchemaNotFound {
        /// The schema id in the record's header.
        id: u32,
        /// The registry client's error.
        detail: String,
    },
    /// The record does not decode with its schema, or the registry answered
    /// the schema's request with an error.
    #[error("cannot decode with schema id {id}: {detail}")]
    Undecodable {
        /// The schema id in the record's header.
        id: u32,
        /// The registry client's error.
        detail: String,
    },
    /// The record's schema is not a record's (rules read JSON objects).
    #[error("schema {id} is not a record: the record is {text:.64}")]
    NotARecord {
        /// The schema id in the record's header.
        id: u32,
        /// The value as JSON text (shown up to 64 characters).
        text: String,
    },
    /// A value of an Avro type streamhost does not turn into JSON.
    #[error("Avro {kind} values are not supported")]
    Unsupported {
        /// The type (`duration`, `decimal`).
        kind: &'static str,
    },
    /// An output that is not JSON text.
    #[error("output is not JSON: {0}")]
    OutputNotJson(serde_json::Error),
    /// An output that is JSON but not an object.
    #[error("an Avro output must be a JSON object")]
    OutputNotObject,
    /// The schema inferred for an output did not parse.
    #[error("{0}")]
    InferredSchema(apache_avro::Error),
    /// The registry refused to register an output's schema (incompatible).
    #[error("the schema registry refused the {dest} schema for subject {subject}: {detail}")]
    Refused {
        /// Which output (`enriched`, `alerts`).
        dest: &'static str,
        /// The subject it was registered under.
        subject: String,
        /// The registry client's error.
        detail: String,
    },
    /// An output's value does not match its inferred schema.
    #[error("encoding an Avro output: {0}")]
    Encoding(apache_avro::Error),
}

/// What a first byte of `{` suggests.
fn json_hint(first: &u8) -> &'static str {
    if *first == b'{' {
        " (it looks like JSON: is --input-format right?)"
    } else {
        ""
    }
}

/// The Confluent framing's magic byte.
pub const MAGIC: u8 = 0;
/// Magic byte and schema id.
pub const HEADER: usize = 5;

/// How a registry is reached.
#[derive(Clone)]
pub struct RegistryConfig {
    /// The registry's base URL.
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

fn settings(config: &RegistryConfig) -> Result<SrSettings, Error> {
    let mut builder = SrSettings::new_builder(config.url.clone());
    builder.set_timeout(config.timeout).no_proxy();
    if let Some((user, password)) = &config.basic_auth {
        builder.set_basic_authorization(user, Some(password));
    }
    builder.build().map_err(|e| Error::Registry {
        url: shown(&config.url),
        reason: e.to_string(),
    })
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
    /// A reader that asks the registry of `config` for schemas.
    pub fn new(config: &RegistryConfig) -> Result<AvroInput, Error> {
        Ok(AvroInput {
            decoder: AvroDecoder::new(settings(config)?),
            url: shown(&config.url),
        })
    }

    /// The record as JSON text, or why it cannot be read. Pauses while the
    /// registry cannot be reached.
    pub fn to_json(&self, bytes: &[u8]) -> Result<String, Error> {
        let id = schema_id(bytes)?;
        let decoded = patiently("fetching a schema", &self.url, || {
            self.decoder.decode(Some(bytes))
        })
        .map_err(|e| explain_decode(id, &e))?;
        let mut text = String::with_capacity(bytes.len() * 2);
        to_json::push_value(&mut text, &decoded.value)?;
        if !text.starts_with('{') {
            return Err(Error::NotARecord { id, text });
        }
        Ok(text)
    }
}

/// The schema id of a record in the Confluent framing, checking the header.
pub fn schema_id(bytes: &[u8]) -> Result<u32, Error> {
    if bytes.len() < HEADER {
        return Err(Error::TooShort { len: bytes.len() });
    }
    if bytes[0] != MAGIC {
        return Err(Error::NoMagicByte { first: bytes[0] });
    }
    Ok(u32::from_be_bytes(
        bytes[1..HEADER].try_into().expect("4 bytes"),
    ))
}

fn explain_decode(id: u32, e: &SRCError) -> Error {
    let detail = describe(e);
    if e.error.contains("404") {
        Error::SchemaNotFound { id, detail }
    } else {
        Error::Undecodable { id, detail }
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
    /// The output topic.
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
    /// A writer that registers the schemas of the `enriched` and `alerts`
    /// outputs in the registry of `config`, under subjects `strategy` names.
    pub fn new(
        config: &RegistryConfig,
        strategy: SubjectStrategy,
        enriched: Target,
        alerts: Target,
    ) -> Result<AvroOutput, Error> {
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
    pub fn encode(&self, dest: Dest, json: &[u8]) -> Result<Vec<u8>, Error> {
        let (target, record) = match dest {
            Dest::Enriched => (&self.enriched, "EnrichedRecord"),
            Dest::Alerts => (&self.alerts, "Alert"),
            Dest::DeadLetter => return Ok(json.to_vec()),
        };
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(Error::OutputNotJson)?;
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
                let schema = Schema::parse_str(&key.1).map_err(Error::InferredSchema)?;
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
                .map_err(|e| Error::Refused {
                    dest: dest.name(),
                    subject: subject.clone(),
                    detail: describe(&e),
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
            .map_err(Error::Encoding)?;
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

    /// The messages dead letters carry are those of the strings they were.
    #[test]
    fn messages_read_as_before() {
        let text = format!("[{}]", "1,".repeat(40));
        assert_eq!(
            Error::NotARecord { id: 7, text }.to_string(),
            format!(
                "schema 7 is not a record: the record is [{}1",
                "1,".repeat(31)
            )
        );
        let detail = "HTTP 404".to_string();
        assert_eq!(
            Error::SchemaNotFound { id: 9, detail }.to_string(),
            "schema id 9 is not in the registry (HTTP 404)"
        );
        let refused = Error::Refused {
            dest: "alerts",
            subject: "out-value".into(),
            detail: "409".into(),
        };
        assert_eq!(
            refused.to_string(),
            "the schema registry refused the alerts schema for subject out-value: 409"
        );
        assert_eq!(
            schema_id(&[1, 0, 0, 0, 0]).unwrap_err().to_string(),
            "not in the Confluent Avro framing: the first byte is 0x01, not the magic byte 0"
        );
    }

    #[test]
    fn the_header_is_checked_before_the_registry_is_asked() {
        assert!(
            schema_id(&[0, 0, 0])
                .unwrap_err()
                .to_string()
                .contains("5-byte header")
        );
        let json = schema_id(br#"{"a":1}"#).unwrap_err().to_string();
        assert!(json.contains("0x7b") && json.contains("JSON"), "{json}");
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]).ok(), Some(258));
    }
}
