//! Where strategies cross over as the per-item cost grows (see
//! [`super::Compare::sweep`]).

use super::{PoolState, Table};
use std::fmt;

/// Where a variant's speed, relative to the reference's, reaches a threshold and stays
/// there for every larger cost measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossing {
    /// Already at the smallest cost measured.
    Always,
    /// From about this many ns per item (interpolated between the two costs measured
    /// around it, on a log scale).
    At(f64),
    /// Not at the largest cost measured.
    Never,
}

/// The speed of every variant relative to a reference variant, at each item cost of a
/// sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    costs: Vec<f64>,
    reference: String,
    /// Per variant (the reference excluded): its speed over the reference's at each
    /// cost (reference time / variant time; 1.0 = as fast).
    relative: Vec<(String, Vec<f64>)>,
}

impl Sweep {
    pub(super) fn from_tables(costs: &[f64], reference: &str, state: PoolState, tables: &[Table]) -> Self {
        assert!(
            tables.iter().any(|t| t.row(reference).is_some()),
            "the sweep's reference {reference:?} is not a variant of its groups"
        );
        let mut relative: Vec<(String, Vec<f64>)> = Vec::new();
        for (k, t) in tables.iter().enumerate() {
            let ours = t.row(reference).and_then(|r| r.cell(state)).map_or(f64::NAN, |c| c.median_ns);
            for row in &t.rows {
                if row.variant == reference {
                    continue;
                }
                let theirs = match (&row.wrong, row.cell(state)) {
                    (None, Some(c)) => ours / c.median_ns,
                    _ => f64::NAN,
                };
                let at = match relative.iter().position(|(name, _)| *name == row.variant) {
                    Some(at) => at,
                    None => {
                        relative.push((row.variant.clone(), vec![f64::NAN; costs.len()]));
                        relative.len() - 1
                    }
                };
                relative[at].1[k] = theirs;
            }
        }
        Self::new(costs.to_vec(), reference.to_string(), relative)
    }

    /// A sweep from measurements taken elsewhere: item costs in ns (positive,
    /// ascending), the reference's name, and per variant its speed over the
    /// reference's at each cost.
    ///
    /// # Panics
    ///
    /// If the costs are not positive and ascending, or a variant has not one value per
    /// cost.
    pub fn new(costs: Vec<f64>, reference: String, relative: Vec<(String, Vec<f64>)>) -> Self {
        assert!(
            costs.iter().all(|&c| c > 0.0) && costs.windows(2).all(|w| w[0] < w[1]),
            "sweep costs must be positive and ascending: {costs:?}"
        );
        for (name, r) in &relative {
            assert_eq!(r.len(), costs.len(), "{name}: one value per cost");
        }
        Self { costs, reference, relative }
    }

    /// The item costs measured, in ns.
    pub fn costs(&self) -> &[f64] {
        &self.costs
    }

    /// Each variant's speed over the reference's at each cost.
    pub fn relative(&self) -> &[(String, Vec<f64>)] {
        &self.relative
    }

    /// Where each variant reaches `fraction` of the reference's speed (0.9 = within
    /// 10%) and stays there.
    pub fn crossings(&self, fraction: f64) -> Vec<(&str, Crossing)> {
        self.relative.iter().map(|(name, r)| (name.as_str(), crossing(&self.costs, r, fraction))).collect()
    }
}

/// The smallest cost from which `relative` stays at or above `fraction`.
pub(crate) fn crossing(costs: &[f64], relative: &[f64], fraction: f64) -> Crossing {
    if relative.is_empty() {
        return Crossing::Never;
    }
    // From the last point below the line (NaN counts as below), the next one is where
    // it stays above.
    let below = relative.iter().rposition(|&r| r.is_nan() || r < fraction);
    match below {
        None => Crossing::Always,
        Some(i) if i + 1 == relative.len() => Crossing::Never,
        Some(i) => {
            let (c0, c1, r0, r1) = (costs[i], costs[i + 1], relative[i], relative[i + 1]);
            if r0.is_nan() || r1 <= r0 {
                return Crossing::At(c1);
            }
            // Linear in the ratio, logarithmic in the cost.
            let t = (fraction - r0) / (r1 - r0);
            Crossing::At((c0.ln() + t * (c1.ln() - c0.ln())).exp())
        }
    }
}

fn cost(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

impl fmt::Display for Sweep {
    /// One line per variant: from which item cost it is within 10% of the reference,
    /// and from which it is as fast.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = (self.costs.first().copied().unwrap_or(0.0), self.costs.last().copied().unwrap_or(0.0));
        let say = |c: Crossing| match c {
            Crossing::Always => format!("already at {}", cost(lo)),
            Crossing::At(ns) => format!("from ~{}", cost(ns)),
            Crossing::Never => format!("not even at {}", cost(hi)),
        };
        for (name, r) in &self.relative {
            writeln!(
                f,
                "{name:<16} within 10% of {}: {}; as fast: {}",
                self.reference,
                say(crossing(&self.costs, r, 0.9)),
                say(crossing(&self.costs, r, 1.0))
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic cost model: `n` items of cost `c` on `p` threads, each strategy with
    /// its own overhead per item (ns); the reference pays 1 ns.
    fn model(costs: &[f64], overhead: f64) -> Vec<f64> {
        let time = |c: f64, o: f64| 1000.0 * (c + o) / 2.0;
        costs.iter().map(|&c| time(c, 1.0) / time(c, overhead)).collect()
    }

    #[test]
    fn finds_the_crossover_of_a_known_cost_model() {
        let costs: Vec<f64> = (0..12).map(|k| 10f64 * 2f64.powi(k)).collect();
        // 100 ns per item: within 10% once (c + 1) / (c + 100) >= 0.9, at c = 890 ns.
        let rel = model(&costs, 100.0);
        let Crossing::At(at) = crossing(&costs, &rel, 0.9) else { panic!("expected a crossing") };
        assert!((at / 890.0 - 1.0).abs() < 0.15, "found {at}, expected ~890");
        // Never as fast, and a strategy cheaper than the reference always is.
        assert_eq!(crossing(&costs, &rel, 1.0), Crossing::Never);
        assert_eq!(crossing(&costs, &model(&costs, 0.5), 1.0), Crossing::Always);
    }

    #[test]
    fn a_dip_after_the_crossing_moves_it_later() {
        let costs = [10.0, 100.0, 1000.0, 10000.0];
        assert_eq!(
            crossing(&costs, &[0.5, 0.95, 0.8, 0.97], 0.9),
            Crossing::At(10000.0_f64.min(crossing_at(1000.0, 10000.0, 0.8, 0.97, 0.9)))
        );
        assert_eq!(crossing(&costs, &[0.5, 0.95, f64::NAN, 0.97], 0.9), Crossing::At(10000.0));
    }

    fn crossing_at(c0: f64, c1: f64, r0: f64, r1: f64, f: f64) -> f64 {
        let t = (f - r0) / (r1 - r0);
        (c0.ln() + t * (c1.ln() - c0.ln())).exp()
    }

    #[test]
    #[should_panic(expected = "one value per cost")]
    fn a_sweep_with_a_missing_value_is_refused() {
        Sweep::new(vec![10.0, 100.0], "fanout".into(), vec![("channel".into(), vec![0.5])]);
    }

    #[test]
    #[should_panic(expected = "positive and ascending")]
    fn a_sweep_from_zero_ns_is_refused() {
        Sweep::new(vec![0.0, 100.0], "fanout".into(), Vec::new());
    }

    #[test]
    fn an_empty_sweep_crosses_nowhere() {
        assert_eq!(crossing(&[], &[], 0.9), Crossing::Never);
    }

    #[test]
    fn display_says_one_line_per_variant() {
        let sweep = Sweep::new(
            vec![10.0, 1000.0],
            "fanout".into(),
            vec![("channel".into(), vec![0.2, 0.95]), ("mutex".into(), vec![0.95, 1.0])],
        );
        let text = sweep.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("channel") && text.contains("from ~"), "{text}");
        assert!(text.contains("mutex") && text.contains("already at 10 ns"), "{text}");
    }
}
