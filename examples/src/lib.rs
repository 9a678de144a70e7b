//! What the example programs share: the sensor reading as Avro.

pub mod avro_reading {
    //! The sensor producer's reading as an Avro record, for `--avro`, the
    //! demo and the benchmark.

    /// The article's reading as an Avro record; the event time is a
    /// `timestamp-millis`.
    pub const SCHEMA: &str = r#"{"type": "record", "name": "SensorReading", "namespace": "iot",
      "fields": [
        {"name": "sensor_id", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "temperature", "type": "double"},
        {"name": "humidity", "type": "double"},
        {"name": "pressure", "type": "double"},
        {"name": "location", "type": {"type": "record", "name": "Location", "fields": [
          {"name": "latitude", "type": "double"}, {"name": "longitude", "type": "double"}]}},
        {"name": "battery_level", "type": "double"}
      ]}"#;

    /// Registers `SCHEMA` and returns its id and parsed form.
    pub fn register(url: &str, topic: &str) -> anyhow::Result<(u32, apache_avro::Schema)> {
        use schema_registry_converter::blocking::schema_registry::{SrSettings, post_schema};
        use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
        let registered = post_schema(
            &SrSettings::new(url.to_string()),
            format!("{topic}-value"),
            SuppliedSchema::new(
                Some("iot.SensorReading".into()),
                SchemaType::Avro,
                SCHEMA.into(),
            ),
        )
        .map_err(|e| anyhow::anyhow!("registering the reading schema at {url}: {e}"))?;
        Ok((registered.id, apache_avro::Schema::parse_str(SCHEMA)?))
    }

    /// A reading as the sensor producer shapes it (JSON), in the Confluent
    /// Avro framing with schema `id`.
    pub fn framed(
        id: u32,
        schema: &apache_avro::Schema,
        v: &serde_json::Value,
        event_ms: i64,
    ) -> anyhow::Result<Vec<u8>> {
        use apache_avro::types::Value;
        let num = |v: &serde_json::Value| Value::Double(v.as_f64().unwrap_or(f64::NAN));
        let record = Value::Record(vec![
            (
                "sensor_id".into(),
                Value::String(v["sensor_id"].as_str().unwrap_or_default().into()),
            ),
            ("timestamp".into(), Value::TimestampMillis(event_ms)),
            ("temperature".into(), num(&v["temperature"])),
            ("humidity".into(), num(&v["humidity"])),
            ("pressure".into(), num(&v["pressure"])),
            (
                "location".into(),
                Value::Record(vec![
                    ("latitude".into(), num(&v["location"]["latitude"])),
                    ("longitude".into(), num(&v["location"]["longitude"])),
                ]),
            ),
            ("battery_level".into(), num(&v["battery_level"])),
        ]);
        let mut out = vec![0u8];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(
            apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                .build()
                .and_then(|w| w.write_value_to_vec(record))?,
        );
        Ok(out)
    }
}
