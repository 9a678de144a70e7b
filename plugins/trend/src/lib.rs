//! The article's temperature trend as a streamhost `trend` component.
//!
//! The mean of the newest three temperature values in the window is compared
//! with the mean of the oldest three: more than 2% above is `increasing`, more
//! than 2% below is `decreasing`, anything else `stable`. A window with fewer
//! than two values is `stable`. The comparison is the article's
//! (`recent > older * 1.02`), kept exactly so outputs match it.

pub const VERSION: &str = "1.0.0";

/// How many values at each end of the window the trend compares.
pub const SPAN: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Increasing,
    Decreasing,
    Stable,
}

/// Mean of the present (non-NaN) values, NaN when there are none.
fn mean(values: &[f64]) -> f64 {
    let (sum, n) = values
        .iter()
        .filter(|v| !v.is_nan())
        .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / f64::from(n) }
}

/// Direction and relative change, given the window's value count and its
/// oldest and newest values (each oldest first, at most `SPAN` used).
pub fn trend(count: usize, head: &[f64], tail: &[f64]) -> (Direction, f64) {
    if count < 2 {
        return (Direction::Stable, f64::NAN);
    }
    let head = &head[..head.len().min(SPAN).min(count)];
    let tail_len = tail.len().min(count);
    let tail = &tail[tail_len.saturating_sub(SPAN)..tail_len];
    let older = mean(head);
    let recent = mean(tail);
    let change = recent / older - 1.0;
    let direction = if recent > older * 1.02 {
        Direction::Increasing
    } else if recent < older * 0.98 {
        Direction::Decreasing
    } else {
        Direction::Stable
    };
    (direction, change)
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "trend", path: "../../wit", generate_all });

    use exports::streamhost::plugin::trend_rule::Guest;
    use streamhost::plugin::types::{
        Batch, Direction, Kind, Needs, PluginInfo, TrendResult, WindowView,
    };

    struct TrendRule;

    impl Guest for TrendRule {
        fn describe() -> Result<PluginInfo, String> {
            Ok(PluginInfo {
                name: "trend".into(),
                version: super::VERSION.into(),
                kind: Kind::Trend,
                needs: Needs::WINDOW_VALUES,
                windows: Vec::new(),
                tables: Vec::new(),
            })
        }

        fn trend(batch: Batch, windows: WindowView) -> Vec<Result<Option<TrendResult>, String>> {
            let n = batch.len as usize;
            let Some(f) = batch.fields.iter().position(|name| name == "temperature") else {
                return (0..n).map(|_| Ok(None)).collect();
            };
            let window = &windows.fields[f];
            let k = windows.k as usize;
            (0..n)
                .map(|i| {
                    let count = windows.counts[i] as usize;
                    let head = &window.head[i * k..i * k + k];
                    let tail = &window.tail[i * k..i * k + k];
                    let (direction, change) = super::trend(count, head, tail);
                    Ok(Some(TrendResult {
                        field: f as u32,
                        direction: match direction {
                            super::Direction::Increasing => Direction::Increasing,
                            super::Direction::Decreasing => Direction::Decreasing,
                            super::Direction::Stable => Direction::Stable,
                        },
                        change,
                    }))
                })
                .collect()
        }
    }

    export!(TrendRule);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_than_two_values_is_stable() {
        assert_eq!(trend(1, &[50.0], &[50.0]).0, Direction::Stable);
    }

    #[test]
    fn compares_newest_three_with_oldest_three() {
        // Window 10, 10, 10, 20, 20, 20: oldest three mean 10, newest 20.
        let (d, change) = trend(6, &[10.0, 10.0, 10.0], &[20.0, 20.0, 20.0]);
        assert_eq!(d, Direction::Increasing);
        assert!((change - 1.0).abs() < 1e-12);
        assert_eq!(trend(6, &[20.0; 3], &[10.0; 3]).0, Direction::Decreasing);
    }

    #[test]
    fn two_percent_edges() {
        // 102 is not > 100 * 1.02 (= 102): stable. Just above is increasing.
        assert_eq!(trend(2, &[100.0], &[102.5]).0, Direction::Increasing);
        assert_eq!(trend(2, &[100.0], &[102.0]).0, Direction::Stable);
        assert_eq!(trend(2, &[100.0], &[98.0]).0, Direction::Stable);
        assert_eq!(trend(2, &[100.0], &[97.9]).0, Direction::Decreasing);
    }

    #[test]
    fn short_windows_overlap_head_and_tail() {
        // Count 2 with k = 3: only two meaningful values, padded with NaN.
        let nan = f64::NAN;
        let (d, _) = trend(2, &[10.0, 20.0, nan], &[10.0, 20.0, nan]);
        // head mean = 15, tail mean = 15.
        assert_eq!(d, Direction::Stable);
    }
}
