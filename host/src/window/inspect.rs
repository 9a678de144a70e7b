//! One key's windows as they stand, for the key inspector (`GET
//! /keys/{key}`): the `--window` and each declared window, through the same
//! snapshots the rules see (`KeyWindow::snapshot`, `SpecState::snapshot`),
//! so an inspection says exactly what the next rule call would be told;
//! and the newest readings the key holds.
//!
//! Read-only and O(declared windows × fields + readings asked for): it is
//! asked between batches by the thread that owns the windows.

use crate::contract::types::Aggregate;

use super::{ViewBuilder, Windows};

/// Readings an inspection returns at most, whatever is asked.
pub const MAX_READINGS: usize = 1000;

/// One key's windows on one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyInspection {
    /// The key's newest event time.
    pub newest_ms: i64,
    /// Readings its buffer holds (as long as the longest window).
    pub held: usize,
    /// The `--window`.
    pub window: MainAggregates,
    /// Each declared window, in the configuration's order.
    pub declared: Vec<DeclaredAggregates>,
    /// The newest readings, oldest first.
    pub readings: Vec<Reading>,
}

/// The `--window`'s view.
#[derive(Clone, Debug, PartialEq)]
pub struct MainAggregates {
    /// Event time of its oldest reading.
    pub start_ms: i64,
    /// Event time of its newest reading.
    pub end_ms: i64,
    /// Readings it holds.
    pub count: u32,
    /// Per configured field, in order.
    pub fields: Vec<FieldAggregates>,
}

/// One field of the `--window`; NaN where no reading holds the field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldAggregates {
    /// Mean of the values present.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// One declared window's view.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredAggregates {
    /// Its length in milliseconds of event time.
    pub length_ms: i64,
    /// Readings it holds.
    pub count: u32,
    /// Per field it covers (an index into the configured fields), each
    /// aggregate it asks for with its value, in the spec's order.
    pub fields: Vec<(usize, Vec<(Aggregate, f64)>)>,
}

/// One reading: its event time and a value per field (NaN: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Event time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// One value per configured field.
    pub values: Vec<f64>,
}

impl Windows {
    /// `key`'s windows on `partition`, with its newest `readings` readings
    /// (at most `MAX_READINGS`); `None` when it holds none there.
    pub fn inspect(&self, partition: i32, key: &str, readings: usize) -> Option<KeyInspection> {
        let w = self.partitions.get(&partition)?.keys.get(key)?;
        let buf = &w.buf;
        if buf.len() == 0 {
            return None;
        }
        // A one-record view, built as a batch's is.
        let mut view = ViewBuilder::new(&self.cfg, false, 1);
        w.snapshot(self.cfg.k, &mut view);
        for ((spec, plan), dw) in w
            .declared
            .iter()
            .zip(&self.plans)
            .zip(&mut view.view.declared)
        {
            spec.snapshot(plan, buf, dw);
        }
        let v = view.view;
        let window = MainAggregates {
            start_ms: v.starts[0],
            end_ms: v.ends[0],
            count: v.counts[0],
            fields: v
                .fields
                .iter()
                .map(|f| FieldAggregates {
                    mean: f.mean[0],
                    min: f.min[0],
                    max: f.max[0],
                })
                .collect(),
        };
        let declared = self
            .plans
            .iter()
            .zip(&v.declared)
            .map(|(plan, dw)| DeclaredAggregates {
                length_ms: plan.length_ms,
                count: dw.counts[0],
                fields: plan
                    .fields
                    .iter()
                    .zip(&dw.fields)
                    .map(|(&f, cols)| {
                        let values = plan
                            .aggregates
                            .iter()
                            .zip(&cols.columns)
                            .map(|(&a, col)| (a, col[0]))
                            .collect();
                        (f, values)
                    })
                    .collect(),
            })
            .collect();
        let n = readings.min(MAX_READINGS).min(buf.len());
        let readings = (buf.len() - n..buf.len())
            .map(|i| Reading {
                time_ms: buf.time(i),
                values: (0..buf.fields).map(|f| buf.value(i, f)).collect(),
            })
            .collect();
        Some(KeyInspection {
            newest_ms: w.newest,
            held: buf.len(),
            window,
            declared,
            readings,
        })
    }
}

#[cfg(test)]
mod tests {
    //! An inspection against the readings put in, recomputed here.

    use super::*;
    use crate::window::{DeclaredSpec, WindowConfig};

    fn config() -> WindowConfig {
        WindowConfig {
            length_ms: 10_000,
            lateness_ms: 60_000,
            k: 3,
            fields: 2,
            idle_ms: 3_600_000,
            declared: vec![DeclaredSpec {
                length_ms: 4_000,
                fields: vec![1],
                aggregates: vec![Aggregate::Count, Aggregate::Mean, Aggregate::Max],
            }],
        }
    }

    #[test]
    fn an_inspection_is_the_windows_of_the_readings_put_in() {
        let mut w = Windows::new(config());
        // A reading a second, t = 1..=20 s; field 1 absent every fifth.
        let readings: Vec<(i64, [f64; 2])> = (1..=20)
            .map(|i| {
                let b = if i % 5 == 0 { f64::NAN } else { i as f64 * 0.5 };
                (i * 1000, [20.0 + (i % 7) as f64, b])
            })
            .collect();
        for (offset, (t, v)) in readings.iter().enumerate() {
            w.insert(3, offset as i64, "k", *t, v, None).unwrap();
        }
        w.insert(3, 99, "other", 5_000, &[1.0, 1.0], None).unwrap();
        assert_eq!(w.inspect(3, "missing", 5), None);
        assert_eq!(w.inspect(4, "k", 5), None);
        let got = w.inspect(3, "k", 5).unwrap();
        // The --window: t in (20 - 10, 20] s.
        let inside: Vec<&(i64, [f64; 2])> = readings.iter().filter(|r| r.0 > 10_000).collect();
        assert_eq!(got.window.count as usize, inside.len());
        assert_eq!((got.window.start_ms, got.window.end_ms), (11_000, 20_000));
        for f in 0..2 {
            let vals: Vec<f64> = inside
                .iter()
                .map(|r| r.1[f])
                .filter(|v| !v.is_nan())
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let fa = got.window.fields[f];
            assert!((fa.mean - mean).abs() < 1e-12, "{f}: {} vs {mean}", fa.mean);
            assert_eq!(fa.min, vals.iter().copied().fold(f64::INFINITY, f64::min));
            assert_eq!(
                fa.max,
                vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            );
        }
        // The declared window: field 1 over t in (16, 20] s; 20 s absent.
        let d = &got.declared[0];
        assert_eq!((d.length_ms, d.count), (4_000, 4));
        let (f, aggs) = &d.fields[0];
        assert_eq!(*f, 1);
        assert_eq!(aggs[0], (Aggregate::Count, 3.0));
        assert_eq!(aggs[1].0, Aggregate::Mean);
        assert!((aggs[1].1 - (8.5 + 9.0 + 9.5) / 3.0).abs() < 1e-12);
        assert_eq!(aggs[2], (Aggregate::Max, 9.5));
        // The newest five readings, oldest first.
        let times: Vec<i64> = got.readings.iter().map(|r| r.time_ms).collect();
        assert_eq!(times, [16_000, 17_000, 18_000, 19_000, 20_000]);
        assert_eq!(got.readings[4].values[0], readings[19].1[0]);
        assert!(got.readings[4].values[1].is_nan());
        assert_eq!((got.newest_ms, got.held), (20_000, 10));
        // Asking for more than held gives what is held; never more than
        // the cap.
        assert_eq!(w.inspect(3, "k", usize::MAX).unwrap().readings.len(), 10);
    }
}
