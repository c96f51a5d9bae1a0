//! Results: rows of samples per (work, tool), the markdown table and the JSON document.
//!
//! The ratio column compares barman-rs with the best anchor of the same work (fastest, or the
//! highest TPS / throughput), and with real Barman too when that is not the best anchor: it is
//! the program barman-rs replaces. Goals come from the benchmark issue and are printed beside the
//! measured figure — never asserted: the harness exits 0 whatever the numbers say.

use serde_json::json;

use crate::measure::{median, Sample};

/// What a row's main figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Wall seconds (lower is better).
    Seconds,
    /// Milliseconds per WAL segment (lower is better).
    MsPerSegment,
    /// Segments per second (higher is better).
    SegmentsPerSecond,
    /// pgbench transactions per second (higher is better).
    Tps,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::MsPerSegment => "ms/seg",
            Unit::SegmentsPerSecond => "seg/s",
            Unit::Tps => "TPS",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Unit::SegmentsPerSecond | Unit::Tps)
    }
}

/// A goal from the issue.
#[derive(Debug, Clone)]
pub enum Goal {
    /// barman-rs / `anchor` at most `max` (times).
    RatioAtMost { anchor: &'static str, max: f64 },
    /// barman-rs / `anchor` at least `min` (throughputs).
    RatioAtLeast { anchor: &'static str, min: f64 },
    /// Main figure at most this.
    MaxValue(f64),
    /// Main figure at least this.
    MinValue(f64),
}

/// The measurements of one tool in one work.
#[derive(Debug, Clone)]
pub struct Row {
    /// The tool (`barman-rs`, `pg_basebackup -Ft`, …).
    pub tool: String,
    /// Whether this is barman-rs (the others are anchors).
    pub ours: bool,
    /// A reference figure that is not an anchor (pgbench with no standby): no ratio to it.
    pub baseline: bool,
    /// Samples, one per repetition.
    pub samples: Vec<Sample>,
    /// Bytes the tool produced in its last run (backup size, restored size), when meaningful.
    pub output_bytes: Option<u64>,
    /// Why it has no samples, or anything odd.
    pub note: Option<String>,
}

impl Row {
    /// A row with no samples yet.
    pub fn new(tool: &str, ours: bool) -> Row {
        Row {
            tool: tool.to_owned(),
            ours,
            baseline: false,
            samples: Vec::new(),
            output_bytes: None,
            note: None,
        }
    }

    fn figure(&self, unit: Unit) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let v: Vec<f64> = self
            .samples
            .iter()
            .map(|s| match unit {
                Unit::Seconds => s.wall_s,
                _ => s.value.unwrap_or(f64::NAN),
            })
            .collect();
        Some(median(&v))
    }

    fn cpu(&self) -> Option<f64> {
        let v: Vec<f64> = self.samples.iter().map(|s| s.cpu_s).filter(|c| c.is_finite()).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    fn rss(&self) -> Option<f64> {
        let v: Vec<f64> = self.samples.iter().map(|s| s.rss_mib).filter(|c| c.is_finite()).collect();
        v.into_iter().reduce(f64::max)
    }
}

/// One measured work.
#[derive(Debug, Clone)]
pub struct Work {
    /// Short name (`backup`, `backup-zstd`, …).
    pub name: &'static str,
    /// What was measured, for the reader.
    pub title: String,
    /// Unit of the main figure.
    pub unit: Unit,
    /// Rows, barman-rs first.
    pub rows: Vec<Row>,
    /// The goal for barman-rs, if any.
    pub goal: Option<Goal>,
    /// Whether the RSS goal (≤ 128 MiB) applies to barman-rs here.
    pub rss_goal: bool,
}

/// RSS goal of the issue, MiB.
const RSS_GOAL_MIB: f64 = 128.0;

impl Work {
    fn best_anchor(&self) -> Option<(&Row, f64)> {
        let mut best: Option<(&Row, f64)> = None;
        for r in self.rows.iter().filter(|r| !r.ours && !r.baseline) {
            let Some(f) = r.figure(self.unit) else { continue };
            if !f.is_finite() {
                continue;
            }
            let better = match best {
                None => true,
                Some((_, b)) if self.unit.higher_is_better() => f > b,
                Some((_, b)) => f < b,
            };
            if better {
                best = Some((r, f));
            }
        }
        best
    }

    /// barman-rs row `row` against the best anchor, and against real Barman when that one is
    /// not the best: `[(anchor, ratio)]`.
    fn ratios(&self, row: &Row) -> Vec<(String, f64)> {
        let Some(fig) = row.figure(self.unit).filter(|f| row.ours && f.is_finite()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let best = self.best_anchor();
        if let Some((b, bf)) = best {
            out.push((b.tool.clone(), fig / bf));
        }
        let barman = self
            .rows
            .iter()
            .find(|r| r.tool == crate::barman_py::TOOL)
            .and_then(|r| Some((r, r.figure(self.unit).filter(|f| f.is_finite())?)));
        if let Some((r, f)) = barman {
            if best.is_none_or(|(b, _)| b.tool != r.tool) {
                out.push((r.tool.clone(), fig / f));
            }
        }
        out
    }

    fn goal_text(&self, row: &Row) -> String {
        if !row.ours {
            return String::new();
        }
        let Some(fig) = row.figure(self.unit) else {
            return String::new();
        };
        let mut parts = Vec::new();
        let mark = |ok: bool| if ok { "met" } else { "NOT met" };
        match &self.goal {
            Some(Goal::RatioAtMost { anchor, max }) => {
                match self.rows.iter().find(|r| r.tool == *anchor).and_then(|r| r.figure(self.unit)) {
                    Some(a) => {
                        let ratio = fig / a;
                        parts.push(format!("≤ {max}× {anchor}: {ratio:.2}× {}", mark(ratio <= *max)));
                    }
                    None => parts.push(format!("≤ {max}× {anchor}: no anchor")),
                }
            }
            Some(Goal::RatioAtLeast { anchor, min }) => {
                match self.rows.iter().find(|r| r.tool == *anchor).and_then(|r| r.figure(self.unit)) {
                    Some(a) => {
                        let ratio = fig / a;
                        parts.push(format!("≥ {min}× {anchor}: {ratio:.2}× {}", mark(ratio >= *min)));
                    }
                    None => parts.push(format!("≥ {min}× {anchor}: no anchor")),
                }
            }
            Some(Goal::MaxValue(max)) => {
                parts.push(format!("≤ {max} {}: {}", self.unit.label(), mark(fig <= *max)))
            }
            Some(Goal::MinValue(min)) => {
                parts.push(format!("≥ {min} {}: {}", self.unit.label(), mark(fig >= *min)))
            }
            None => {}
        }
        if self.rss_goal {
            if let Some(rss) = row.rss() {
                parts.push(format!("RSS ≤ {RSS_GOAL_MIB} MiB: {}", mark(rss <= RSS_GOAL_MIB)));
            }
        }
        parts.join("; ")
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".to_owned(),
    }
}

/// The markdown table.
pub fn markdown(works: &[Work]) -> String {
    let mut out = String::from(
        "| work | tool | median | unit | CPU s | peak RSS MiB | output MB | ratio to best anchor | goal |\n\
         |---|---|---:|---|---:|---:|---:|---:|---|\n",
    );
    for w in works {
        for r in &w.rows {
            let fig = r.figure(w.unit);
            let digits = match w.unit {
                Unit::Seconds => 2,
                Unit::MsPerSegment => 1,
                Unit::SegmentsPerSecond | Unit::Tps => 0,
            };
            let ratio = w
                .ratios(r)
                .iter()
                .map(|(tool, x)| format!("{x:.2}× {tool}"))
                .collect::<Vec<_>>()
                .join("; ");
            let mut goal = w.goal_text(r);
            if let Some(note) = &r.note {
                if !goal.is_empty() {
                    goal.push_str("; ");
                }
                goal.push_str(note);
            }
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                w.name,
                r.tool,
                fmt_opt(fig, digits),
                w.unit.label(),
                fmt_opt(r.cpu(), 2),
                fmt_opt(r.rss(), 0),
                fmt_opt(r.output_bytes.map(|b| b as f64 / 1e6), 0),
                ratio,
                goal.replace('|', "/").replace('\n', " "),
            ));
        }
    }
    out
}

/// The JSON document (every sample, plus the medians shown in the table).
pub fn json(works: &[Work], context: serde_json::Value) -> serde_json::Value {
    let works: Vec<serde_json::Value> = works
        .iter()
        .map(|w| {
            let rows: Vec<serde_json::Value> = w
                .rows
                .iter()
                .map(|r| {
                    json!({
                        "tool": r.tool,
                        "barman_rs": r.ours,
                        "baseline": r.baseline,
                        "median": r.figure(w.unit).filter(|f| f.is_finite()),
                        "median_cpu_s": r.cpu(),
                        "peak_rss_mib": r.rss(),
                        "output_bytes": r.output_bytes,
                        "ratios": w.ratios(r).into_iter().map(|(tool, x)| json!({"anchor": tool, "ratio": x})).collect::<Vec<_>>(),
                        "goal": w.goal_text(r),
                        "note": r.note,
                        "samples": r.samples.iter().map(|s| json!({
                            "wall_s": s.wall_s,
                            "cpu_s": s.cpu_s,
                            "rss_mib": s.rss_mib,
                            "value": s.value,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "work": w.name,
                "title": w.title,
                "unit": w.unit.label(),
                "rows": rows,
            })
        })
        .collect();
    json!({ "context": context, "works": works })
}
