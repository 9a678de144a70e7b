//! The record decoder driven by sonic-rs's serde deserializer in place of
//! serde_json's, through the same visitor (`streamhost::decode::members`):
//! evaluated for section 1, which compares the two readers' speed and
//! checks that they agree on hostile input. Not used by streamhost.

use streamhost::decode::{DecodeError, Decoded, Schema, members};

/// `streamhost::decode::decode`, with sonic-rs reading the JSON.
pub fn decode_sonic(schema: &Schema, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut de = sonic_rs::Deserializer::from_slice(bytes);
    let found = members(schema, &mut de).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            let msg = e.to_string();
            DecodeError::Json(msg.split(" at line ").next().unwrap_or(&msg).to_string())
        } else {
            DecodeError::from_visitor(&e.to_string())
        }
    })?;
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    found.into_decoded(schema)
}

/// Records on which serde_json's and sonic-rs's readers could differ:
/// whether both decoders give the same values, or both refuse. How many
/// agree, and how those that do not differ.
pub fn decoders_agree(schema: &Schema) -> (usize, Vec<String>) {
    let mut agree = 0;
    let mut differ = Vec::new();
    for (name, bytes) in hostile_records() {
        let a = streamhost::decode::decode(schema, &bytes);
        let b = decode_sonic(schema, &bytes);
        let same = match (&a, &b) {
            (Ok(x), Ok(y)) => {
                x.key == y.key
                    && x.time_ms == y.time_ms
                    && x.values
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(y.values.iter().map(|v| v.to_bits()))
            }
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if same {
            agree += 1;
        } else {
            differ.push(format!(
                "{name} (serde_json: {}, sonic-rs: {})",
                a.as_ref()
                    .map_or_else(|e| format!("refused: {e}"), |d| format!("{:?}", d.values)),
                b.as_ref()
                    .map_or_else(|e| format!("refused: {e}"), |d| format!("{:?}", d.values)),
            ));
        }
    }
    (agree, differ)
}

/// Records with what JSON readers may read differently, by name.
fn hostile_records() -> Vec<(&'static str, Vec<u8>)> {
    let ok = r#""sensor_id":"s","timestamp":"2026-11-24T17:30:05Z""#;
    vec![
        (
            "plain",
            format!("{{{ok},\"temperature\":21.5}}").into_bytes(),
        ),
        (
            "duplicate member",
            format!("{{{ok},\"temperature\":1,\"temperature\":2}}").into_bytes(),
        ),
        (
            "duplicate ignored member",
            format!("{{{ok},\"x\":1,\"x\":2}}").into_bytes(),
        ),
        (
            "huge number",
            format!("{{{ok},\"temperature\":1e400}}").into_bytes(),
        ),
        (
            "tiny number",
            format!("{{{ok},\"temperature\":1e-400}}").into_bytes(),
        ),
        (
            "long integer",
            format!("{{{ok},\"temperature\":123456789012345678901234567890}}").into_bytes(),
        ),
        (
            "long fraction",
            format!("{{{ok},\"temperature\":0.1000000000000000055511151231257827}}").into_bytes(),
        ),
        (
            "minus zero",
            format!("{{{ok},\"temperature\":-0}}").into_bytes(),
        ),
        (
            "lone surrogate in the key",
            br#"{"sensor_id":"\ud800","timestamp":"2026-11-24T17:30:05Z"}"#.to_vec(),
        ),
        (
            "lone surrogate elsewhere",
            format!("{{{ok},\"note\":\"\\udc00\"}}").into_bytes(),
        ),
        (
            "escaped key",
            br#"{"sensor_\u0069d":"s","timestamp":"2026-11-24T17:30:05Z"}"#.to_vec(),
        ),
        (
            "bad UTF-8",
            [
                b"{\"sensor_id\":\"\xff\",".as_slice(),
                br#""timestamp":"2026-11-24T17:30:05Z"}"#,
            ]
            .concat(),
        ),
        (
            "deep nesting",
            format!("{{{ok},\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        ),
        ("trailing text", format!("{{{ok}}} x").into_bytes()),
        ("trailing comma", format!("{{{ok},}}").into_bytes()),
        (
            "NaN literal",
            format!("{{{ok},\"temperature\":NaN}}").into_bytes(),
        ),
        (
            "number as string",
            format!("{{{ok},\"temperature\":\"21.5\"}}").into_bytes(),
        ),
        (
            "null field",
            format!("{{{ok},\"temperature\":null}}").into_bytes(),
        ),
        ("not an object", b"[1,2]".to_vec()),
        (
            "control character in a string",
            format!("{{{ok},\"note\":\"a\u{1}b\"}}").into_bytes(),
        ),
    ]
}
