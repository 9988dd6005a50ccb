//! The latency chart, written by hand (no plotting dependency for one picture): one
//! horizontal bar per scenario and backend whose length is the p99 latency on a log axis
//! from 0.1 ms to 1000 ms, a dark mark at the p50, and the two values beside the bar.

use std::fmt::{self, Write as _};

use crate::scenarios::{Row, Scenario};

/// The bars of one backend.
pub struct Series<'a> {
    pub name: &'a str,
    pub rows: &'a [Row],
}

const TITLE: &str = "Latchkey latency per scenario: p99 (bar) and p50 (mark), log scale";
const COLORS: [&str; 2] = ["#4472c4", "#ed7d31"];
const MARK_COLOR: &str = "#222222";
const GRID_COLOR: &str = "#dddddd";
/// Where the axis starts and how many decades it spans: 0.1 ms to 1000 ms.
const MIN_MS: f64 = 0.1;
const DECADES: f64 = 4.0;
const TICKS_MS: [f64; 5] = [0.1, 1.0, 10.0, 100.0, 1000.0];

const LABELS_WIDTH: f64 = 280.0;
const PLOT_WIDTH: f64 = 520.0;
const VALUES_WIDTH: f64 = 200.0;
const TOP: f64 = 70.0;
const BAR: f64 = 14.0;
const BAR_GAP: f64 = 3.0;
const GROUP_GAP: f64 = 12.0;
const AXIS_HEIGHT: f64 = 44.0;

/// The chart, as an SVG document.
pub fn render(series: &[Series]) -> Result<String, fmt::Error> {
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|&s| {
            series
                .iter()
                .any(|se| se.rows.iter().any(|r| r.scenario == s))
        })
        .collect();
    let group = series.len() as f64 * (BAR + BAR_GAP) + GROUP_GAP;
    let plot_height = scenarios.len() as f64 * group;
    let (width, height) = (
        LABELS_WIDTH + PLOT_WIDTH + VALUES_WIDTH,
        TOP + plot_height + AXIS_HEIGHT,
    );
    let mut out = String::new();
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(
        out,
        r#"<text x="10" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(TITLE)
    )?;
    legend(&mut out, series)?;
    axis(&mut out, TOP + plot_height)?;
    for (i, &scenario) in scenarios.iter().enumerate() {
        let top = TOP + i as f64 * group;
        let middle = top + (group - GROUP_GAP) / 2.0 + 4.0;
        writeln!(
            out,
            r#"<text x="{:.1}" y="{middle:.1}" text-anchor="end">{}</text>"#,
            LABELS_WIDTH - 8.0,
            escape(scenario.name())
        )?;
        for (j, s) in series.iter().enumerate() {
            if let Some(row) = s.rows.iter().find(|r| r.scenario == scenario) {
                let y = top + j as f64 * (BAR + BAR_GAP);
                bar(&mut out, row, y, COLORS[j % COLORS.len()])?;
            }
        }
    }
    writeln!(out, "</svg>")?;
    Ok(out)
}

/// The x coordinate of a latency; out-of-range values sit at the ends of the axis.
fn x(ms: f64) -> f64 {
    let decades = (ms.max(MIN_MS).log10() - MIN_MS.log10()).clamp(0.0, DECADES);
    LABELS_WIDTH + PLOT_WIDTH * decades / DECADES
}

/// One bar: p99 as its length, p50 as a mark, both values after it.
fn bar(out: &mut String, row: &Row, y: f64, color: &str) -> fmt::Result {
    let (p50, p99) = (row.m.p50_ms, row.m.p99_ms);
    let end = x(p99);
    writeln!(
        out,
        r#"<rect x="{LABELS_WIDTH}" y="{y:.1}" width="{:.1}" height="{BAR}" fill="{color}"/>"#,
        end - LABELS_WIDTH
    )?;
    writeln!(
        out,
        r#"<rect x="{:.1}" y="{:.1}" width="3" height="{}" fill="{MARK_COLOR}"/>"#,
        x(p50) - 1.5,
        y - 2.0,
        BAR + 4.0
    )?;
    writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
        end + 6.0,
        y + BAR - 3.0,
        escape(&format!("p50 {p50:.2} · p99 {p99:.2} ms"))
    )
}

/// Grid lines and labels at 0.1, 1, 10, 100 and 1000 ms.
fn axis(out: &mut String, bottom: f64) -> fmt::Result {
    for tick in TICKS_MS {
        let at = x(tick);
        writeln!(
            out,
            r#"<line x1="{at:.1}" y1="{:.1}" x2="{at:.1}" y2="{bottom:.1}" stroke="{GRID_COLOR}"/>"#,
            TOP - 6.0
        )?;
        writeln!(
            out,
            r#"<text x="{at:.1}" y="{:.1}" text-anchor="middle">{tick} ms</text>"#,
            bottom + 16.0
        )?;
    }
    writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text>"#,
        LABELS_WIDTH + PLOT_WIDTH / 2.0,
        bottom + 34.0
    )
}

/// A colour swatch per backend, then the p50 mark.
fn legend(out: &mut String, series: &[Series]) -> fmt::Result {
    let mut at = LABELS_WIDTH;
    for (i, s) in series.iter().enumerate() {
        writeln!(
            out,
            r#"<rect x="{at}" y="38" width="12" height="12" fill="{}"/>"#,
            COLORS[i % COLORS.len()]
        )?;
        writeln!(
            out,
            r#"<text x="{}" y="48">{} p99</text>"#,
            at + 16.0,
            escape(s.name)
        )?;
        at += 150.0;
    }
    writeln!(
        out,
        r#"<rect x="{at}" y="36" width="3" height="16" fill="{MARK_COLOR}"/>"#
    )?;
    writeln!(out, r#"<text x="{}" y="48">p50</text>"#, at + 8.0)
}

/// Text made safe for XML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
