//! What a comparison found: [`Table`]s of one workload each, gathered in a [`Report`]
//! that prints as text, JSON lines or CSV.

use super::PoolState;
use crate::stats::RunStats;
use std::fmt::{self, Write as _};

/// One variant in one pool state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Cell {
    /// The state the variant was timed in.
    pub state: PoolState,
    /// Median wall time of a run over the rounds, in nanoseconds.
    pub median_ns: f64,
    /// Fastest round, in nanoseconds.
    pub min_ns: f64,
    /// Slowest round, in nanoseconds.
    pub max_ns: f64,
    /// `median_ns` over the group's item count.
    pub ns_per_item: f64,
    /// The baseline's median in the same state over this variant's.
    pub speedup: f64,
    /// 1 for the fastest in this state; `None` for a variant with a wrong result.
    pub rank: Option<usize>,
    /// Timed rounds behind the median: the table's rounds, or fewer for a variant cut
    /// short by a [budget](super::Group::budget).
    pub rounds: usize,
}

/// One variant of a workload: its cells (in the comparison's state order) and what
/// else it reported.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Row {
    /// The variant's name, such as `"channel"`.
    pub variant: String,
    /// One cell per state timed, headline first.
    pub cells: Vec<Cell>,
    /// Set when a run returned something other than the baseline's result: what it
    /// returned. Such a row is left out of the ranks.
    pub wrong: Option<String>,
    /// The last timed run's statistics, for variants that keep them (work stealing).
    pub stats: Option<RunStats>,
}

impl Row {
    /// The cell of `state`, if that state was timed.
    pub fn cell(&self, state: PoolState) -> Option<&Cell> {
        self.cells.iter().find(|c| c.state == state)
    }
}

/// The measurements of one workload (see [`super::Compare::measure`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Table {
    /// The group's short id.
    pub id: String,
    /// The group's title.
    pub title: String,
    /// Items per run.
    pub items: u64,
    /// Timed rounds (the most any variant did; see [`Cell::rounds`]).
    pub rounds: usize,
    /// The states timed, headline first.
    pub states: Vec<PoolState>,
    /// One row per variant, the baseline first.
    pub rows: Vec<Row>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_samples(
        id: String,
        title: String,
        items: u64,
        rounds: usize,
        states: &[PoolState],
        names: Vec<String>,
        runs: &[(usize, PoolState)],
        mut samples: Vec<Vec<f64>>,
        wrong: Vec<Option<String>>,
        stats: Vec<Option<RunStats>>,
    ) -> Self {
        let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
        let mut rows: Vec<Row> = names
            .into_iter()
            .zip(wrong)
            .zip(stats)
            .map(|((variant, wrong), stats)| Row { variant, cells: Vec::new(), wrong, stats })
            .collect();
        for &state in states {
            if runs.is_empty() {
                break;
            }
            let of_state: Vec<usize> = (0..runs.len()).filter(|&r| runs[r].1 == state).collect();
            let baseline = medians[of_state[0]];
            let mut ranked: Vec<usize> =
                of_state.iter().copied().filter(|&r| rows[runs[r].0].wrong.is_none()).collect();
            ranked.sort_by(|&a, &b| medians[a].total_cmp(&medians[b]));
            for &r in &of_state {
                let s = &samples[r];
                let cell = Cell {
                    state,
                    median_ns: medians[r],
                    min_ns: s.first().copied().unwrap_or(f64::NAN),
                    max_ns: s.last().copied().unwrap_or(f64::NAN),
                    ns_per_item: medians[r] / items.max(1) as f64,
                    speedup: baseline / medians[r],
                    rank: ranked.iter().position(|&o| o == r).map(|p| p + 1),
                    rounds: s.len(),
                };
                rows[runs[r].0].cells.push(cell);
            }
        }
        Self { id, title, items, rounds, states: states.to_vec(), rows }
    }

    /// The row of `variant`.
    pub fn row(&self, variant: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.variant == variant)
    }
}

/// Every table of one comparison, with the machine they were measured on; see the
/// [module docs](super) for an example.
#[derive(Debug, Clone)]
pub struct Report {
    pub(super) title: String,
    pub(super) threads: usize,
    pinned: usize,
    cores: usize,
    pub(super) tables: Vec<Table>,
}

impl Report {
    pub(super) fn new(title: String, threads: usize, pinned: usize, cores: usize) -> Self {
        Self { title, threads, pinned, cores, tables: Vec::new() }
    }

    /// Adds a measured table.
    pub fn push(&mut self, table: Table) {
        self.tables.push(table);
    }

    /// The tables, in the order they were pushed.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The table of the workload `id`.
    pub fn table(&self, id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// The cell of `variant` of workload `id` in `state`.
    pub fn cell(&self, id: &str, variant: &str, state: PoolState) -> Option<&Cell> {
        self.table(id)?.row(variant)?.cell(state)
    }

    /// Every (workload, variant, what it returned) whose result differed from its
    /// baseline's.
    pub fn wrong_results(&self) -> Vec<(&str, &str, &str)> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.rows.iter().filter_map(move |r| Some((t.id.as_str(), r.variant.as_str(), r.wrong.as_deref()?)))
            })
            .collect()
    }

    /// One JSON object per line and cell: workload, variant, state, threads, median,
    /// fastest and slowest round (ns), ns per item, speedup, rank (`null` if wrong),
    /// rounds,
    /// `wrong` (`null`, or what the variant returned) and `stats` (`null`, or the last
    /// run's executed, published, steals and leaves, for variants that keep them).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        for (t, r, c) in self.cells() {
            let rank = c.rank.map_or("null".to_string(), |k| k.to_string());
            let wrong = r.wrong.as_deref().map_or("null".to_string(), json_string);
            let stats = r.stats.as_ref().map_or("null".to_string(), |s| {
                format!(
                    "{{\"executed\":{},\"published\":{},\"steals\":{},\"leaves\":{}}}",
                    s.executed, s.published, s.steals, s.leaves
                )
            });
            let _ = writeln!(
                out,
                "{{\"workload\":{},\"variant\":{},\"state\":{},\"threads\":{},\"median_ns\":{},\"min_ns\":{},\"max_ns\":{},\"ns_per_item\":{},\"speedup\":{},\"rank\":{rank},\"rounds\":{},\"wrong\":{wrong},\"stats\":{stats}}}",
                json_string(&t.id),
                json_string(&r.variant),
                json_string(c.state.name()),
                self.threads,
                json_number(c.median_ns, 0),
                json_number(c.min_ns, 0),
                json_number(c.max_ns, 0),
                json_number(c.ns_per_item, 4),
                json_number(c.speedup, 4),
                c.rounds,
            );
        }
        out
    }

    /// The fields of [`to_json`](Report::to_json) but `stats`, as CSV with a header line.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "workload,variant,state,threads,median_ns,min_ns,max_ns,ns_per_item,speedup,rank,rounds,wrong\n",
        );
        for (t, r, c) in self.cells() {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.0},{:.0},{:.0},{:.4},{:.4},{},{},{}",
                csv_field(&t.id),
                csv_field(&r.variant),
                c.state.name(),
                self.threads,
                c.median_ns,
                c.min_ns,
                c.max_ns,
                c.ns_per_item,
                c.speedup,
                c.rank.map_or(String::new(), |k| k.to_string()),
                c.rounds,
                csv_field(r.wrong.as_deref().unwrap_or("")),
            );
        }
        out
    }

    fn cells(&self) -> impl Iterator<Item = (&Table, &Row, &Cell)> {
        self.tables.iter().flat_map(|t| t.rows.iter().flat_map(move |r| r.cells.iter().map(move |c| (t, r, c))))
    }

    pub(super) fn header(&self) -> String {
        format!(
            "{}: {} threads ({} pinned workers), {} cores; medians of interleaved rounds; speedup over the first row in the same state",
            self.title, self.threads, self.pinned, self.cores
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number, or `null` where JSON has none (a 0 ns median gives an infinite speedup).
fn json_number(x: f64, decimals: usize) -> String {
    if x.is_finite() { format!("{x:.decimals$}") } else { "null".to_string() }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

impl fmt::Display for Report {
    /// The table the main job prints: per workload, a row per variant with ns/item and
    /// speedup and rank in the headline state, then the speedup in every other state.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.header())?;
        for t in &self.tables {
            writeln!(f, "\n{}  {}", t.id, t.title)?;
            let Some((head, rest)) = t.states.split_first() else { continue };
            write!(f, "  {:<18} {:>10} {:>8} {:>5}", "variant", "ns/item", head.name(), "rank")?;
            for s in rest {
                write!(f, " {:>13}", s.name())?;
            }
            writeln!(f)?;
            for r in &t.rows {
                let Some(c) = r.cell(*head) else { continue };
                let rank = c.rank.map_or("-".to_string(), |k| k.to_string());
                write!(f, "  {:<18} {:>10.3} {:>7.2}x {:>5}", r.variant, c.ns_per_item, c.speedup, rank)?;
                for s in rest {
                    let speedup = r.cell(*s).map_or(f64::NAN, |c| c.speedup);
                    write!(f, " {:>12.2}x", speedup)?;
                }
                if c.rounds < t.rounds {
                    write!(f, "  ({} of {} rounds: budget)", c.rounds, t.rounds)?;
                }
                if let Some(wrong) = &r.wrong {
                    write!(f, "  WRONG RESULT: {wrong}")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_no_infinite_or_nan_numbers_and_csv_quotes_what_it_must() {
        assert_eq!(json_number(f64::INFINITY, 4), "null");
        assert_eq!(json_number(f64::NAN, 0), "null");
        assert_eq!(json_number(1.23456, 2), "1.23");
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\r"), "\"say \"\"hi\"\"\r\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
