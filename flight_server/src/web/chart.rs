//! A KPI's series as an SVG line chart, drawn on the server: one line per dimension values,
//! thresholds as bands, anomalies ringed, the forecast dashed inside its 95 % interval. The
//! x axis is the KPI's periods as its calendar names them. No script; every text escaped.

use super::data::Series;
use std::collections::BTreeMap;
use std::fmt::Write;

const W: f64 = 920.0;
const H: f64 = 360.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 56.0;
/// Lines drawn at most; more dimension values are summarised in the legend.
pub const MAX_LINES: usize = 8;
const PALETTE: [&str; MAX_LINES] = [
    "#1f5fbf", "#b3471a", "#1d7a3a", "#7a2f9c", "#8a6d00", "#0f7c86", "#a3245c", "#4d4d4d",
];

/// Text for XML: & < > " ' escaped.
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A tidy number for an axis label.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders the chart.
pub fn render(s: &Series) -> String {
    // the x axis: every period, history then forecast, in order of its start
    let mut periods: BTreeMap<(String, String), ()> = BTreeMap::new();
    for p in &s.points {
        periods.insert((p.start.clone(), p.period.clone()), ());
    }
    for f in &s.forecast {
        periods.insert((f.start.clone(), f.period.clone()), ());
    }
    let axis: Vec<(String, String)> = periods.into_keys().collect();
    let index = |start: &str, period: &str| {
        axis.iter()
            .position(|(s, p)| s == start && p == period)
            .unwrap_or(0)
    };
    let mut groups: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
    for p in &s.points {
        groups
            .entry(p.dims.as_str())
            .or_default()
            .push((index(&p.start, &p.period), p.value));
    }
    let mut values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
    values.extend(s.forecast.iter().flat_map(|f| [f.lo95, f.hi95]));
    values.extend(
        s.thresholds
            .iter()
            .flat_map(|t| [t.warn, t.critical])
            .flatten(),
    );
    let title = format!("{} — {} per {}", s.kpi, s.measure, s.grain);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-labelledby="chart-title chart-desc" class="chart"><title id="chart-title">{}</title>"#,
        xml(&title)
    );
    if values.is_empty() || axis.is_empty() {
        let _ = write!(
            svg,
            r#"<desc id="chart-desc">No values yet: the KPI has not been materialized.</desc><text x="{}" y="{}" text-anchor="middle">No values yet</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    if hi - lo < 1e-9 {
        lo -= 1.0;
        hi += 1.0;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let n = axis.len();
    let x = |i: usize| {
        LEFT + if n > 1 {
            i as f64 * (W - LEFT - RIGHT) / (n - 1) as f64
        } else {
            (W - LEFT - RIGHT) / 2.0
        }
    };
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let _ = write!(
        svg,
        r#"<desc id="chart-desc">{} periods from {} to {}, {} line(s) of dimension values, {} threshold(s), {} anomal(ies), {} forecast period(s).</desc>"#,
        n,
        xml(&axis[0].1),
        xml(&axis[n - 1].1),
        groups.len(),
        s.thresholds.len(),
        s.anomalies.len(),
        s.forecast.len()
    );
    // threshold bands: warn to critical amber, beyond critical red
    for t in &s.thresholds {
        let band = |a: f64, b: f64, class: &str, svg: &mut String| {
            let (a, b) = (a.clamp(lo, hi), b.clamp(lo, hi));
            let (top, bottom) = (y(a.max(b)), y(a.min(b)));
            if bottom - top > 0.0 {
                let _ = write!(
                    svg,
                    r#"<rect class="{class}" x="{LEFT}" y="{top:.1}" width="{:.1}" height="{:.1}"/>"#,
                    W - LEFT - RIGHT,
                    bottom - top
                );
            }
        };
        let above = t.direction != "below";
        match (t.warn, t.critical) {
            (Some(w), Some(c)) => {
                band(w, c, "band-warn", &mut svg);
                band(c, if above { hi } else { lo }, "band-critical", &mut svg);
            }
            (Some(w), None) => band(w, if above { hi } else { lo }, "band-warn", &mut svg),
            (None, Some(c)) => band(c, if above { hi } else { lo }, "band-critical", &mut svg),
            (None, None) => {}
        }
    }
    // axes and labels
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}"/>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}"/><text class="tick" x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"#,
            y(v),
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            xml(&tick_label(v))
        );
    }
    let every = n.div_ceil(10).max(1);
    for (i, (_, label)) in axis.iter().enumerate() {
        if i % every == 0 || i == n - 1 {
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x(i),
                H - BOTTOM + 18.0,
                xml(label)
            );
        }
    }
    // forecast intervals and lines, per group
    let mut forecasts: BTreeMap<&str, Vec<(usize, f64, f64, f64)>> = BTreeMap::new();
    for f in &s.forecast {
        forecasts.entry(f.dims.as_str()).or_default().push((
            index(&f.start, &f.period),
            f.value,
            f.lo95,
            f.hi95,
        ));
    }
    for (g, (dims, line)) in groups.iter().take(MAX_LINES).enumerate() {
        let colour = PALETTE[g];
        if let Some(fc) = forecasts.get(dims) {
            let mut poly: Vec<String> = fc
                .iter()
                .map(|(i, _, _, h)| format!("{:.1},{:.1}", x(*i), y(*h)))
                .collect();
            poly.extend(
                fc.iter()
                    .rev()
                    .map(|(i, _, l, _)| format!("{:.1},{:.1}", x(*i), y(*l))),
            );
            let _ = write!(
                svg,
                r#"<polygon class="interval" fill="{colour}" points="{}"/>"#,
                poly.join(" ")
            );
            let mut pts: Vec<String> = line
                .last()
                .map(|(i, v)| vec![format!("{:.1},{:.1}", x(*i), y(*v))])
                .unwrap_or_default();
            pts.extend(
                fc.iter()
                    .map(|(i, v, _, _)| format!("{:.1},{:.1}", x(*i), y(*v))),
            );
            let _ = write!(
                svg,
                r#"<polyline class="forecast" stroke="{colour}" points="{}"/>"#,
                pts.join(" ")
            );
        }
        let pts: Vec<String> = line
            .iter()
            .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" stroke="{colour}" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            xml(if dims.is_empty() { &s.measure } else { dims })
        );
    }
    for a in &s.anomalies {
        if let Some(i) = axis.iter().position(|(_, p)| *p == a.period) {
            let _ = write!(
                svg,
                r#"<circle class="anomaly" cx="{:.1}" cy="{:.1}" r="6"><title>anomaly: {} {} = {}</title></circle>"#,
                x(i),
                y(a.value),
                xml(&a.period),
                xml(&a.dims),
                xml(&tick_label(a.value))
            );
        }
    }
    // legend
    for (g, dims) in groups.keys().take(MAX_LINES).enumerate() {
        let lx = LEFT + (g % 4) as f64 * 200.0;
        let ly = H - 22.0 + (g / 4) as f64 * 14.0;
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="4" fill="{}"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            ly - 4.0,
            PALETTE[g],
            lx + 16.0,
            ly,
            xml(if dims.is_empty() { &s.measure } else { dims })
        );
    }
    if groups.len() > MAX_LINES {
        let _ = write!(
            svg,
            r#"<text class="legend" x="{:.1}" y="{:.1}">and {} more</text>"#,
            W - RIGHT - 80.0,
            H - 8.0,
            groups.len() - MAX_LINES
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::super::data::{Forecast, Point, Series, Threshold};
    use super::*;

    fn series(dims: &str) -> Series {
        let points = (0..12)
            .map(|i| Point {
                period: format!("FY2024-P{:02}", i + 1),
                start: format!("2024-{:02}-01", i + 1),
                dims: dims.into(),
                value: 100.0 + i as f64,
            })
            .collect::<Vec<_>>();
        Series {
            kpi: "net<script>".into(),
            measure: "net".into(),
            measures: vec!["net".into()],
            grain: "period".into(),
            calendar: Some("nrf".into()),
            anomalies: vec![points[3].clone()],
            points,
            thresholds: vec![Threshold {
                direction: "above".into(),
                warn: Some(108.0),
                critical: Some(110.0),
            }],
            forecast: vec![Forecast {
                period: "FY2025-P01".into(),
                start: "2025-01-01".into(),
                dims: dims.into(),
                value: 112.0,
                lo95: 108.0,
                hi95: 116.0,
            }],
        }
    }

    #[test]
    fn draws_lines_bands_anomalies_and_the_forecast_with_labels_escaped() {
        let svg = render(&series("<b>\"east\"</b> & 'west'"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script>") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("net&lt;script&gt;"));
        assert!(svg.contains("&lt;b&gt;&quot;east&quot;&lt;/b&gt; &amp; &#39;west&#39;"));
        assert_eq!(svg.matches("class=\"series\"").count(), 1);
        assert_eq!(svg.matches("class=\"anomaly\"").count(), 1);
        assert_eq!(svg.matches("class=\"band-warn\"").count(), 1);
        assert_eq!(svg.matches("class=\"band-critical\"").count(), 1);
        assert_eq!(svg.matches("class=\"forecast\"").count(), 1);
        assert!(svg.contains(">FY2024-P01<") && svg.contains(">FY2025-P01<"));
    }

    #[test]
    fn an_empty_series_says_so() {
        let mut s = series("");
        s.points.clear();
        s.forecast.clear();
        s.anomalies.clear();
        s.thresholds.clear();
        assert!(render(&s).contains("No values yet"));
    }
}

/// A dataset's lineage as an SVG graph: what it was made from on the left, what was made from
/// it on the right, an arrow for each edge (from the ledger's receipts).
pub fn lineage(center: &str, upstream: &[String], downstream: &[String]) -> String {
    const BOX_W: f64 = 240.0;
    const BOX_H: f64 = 28.0;
    const GAP: f64 = 12.0;
    const COL: [f64; 3] = [10.0, 340.0, 670.0];
    let rows = upstream.len().max(downstream.len()).max(1);
    let height = rows as f64 * (BOX_H + GAP) + GAP;
    let top = |i: usize, n: usize| {
        let used = n as f64 * (BOX_H + GAP) - GAP;
        (height - used) / 2.0 + i as f64 * (BOX_H + GAP)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 920 {height:.0}" width="920" height="{height:.0}" role="img" aria-labelledby="lineage-title" class="lineage-graph"><title id="lineage-title">Lineage of {}: {} upstream, {} downstream</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>"#,
        xml(center),
        upstream.len(),
        downstream.len()
    );
    let node = |svg: &mut String, x: f64, y: f64, label: &str, class: &str| {
        let shown: String = if label.chars().count() > 30 {
            label.chars().take(29).chain(['…']).collect()
        } else {
            label.to_owned()
        };
        let _ = write!(
            svg,
            r#"<g class="{class}"><rect x="{x:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="4"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}<title>{}</title></text></g>"#,
            x + BOX_W / 2.0,
            y + BOX_H / 2.0 + 4.0,
            xml(&shown),
            xml(label)
        );
    };
    let cy = top(0, 1);
    // edges run left to right: from what it was made from to it, from it to what was made
    for (objects, col) in [(upstream, 0), (downstream, 2)] {
        for (i, o) in objects.iter().enumerate() {
            let y = top(i, objects.len());
            let ((lx, ly), (rx, ry)) = if col == 0 {
                ((COL[0], y), (COL[1], cy))
            } else {
                ((COL[1], cy), (COL[2], y))
            };
            let _ = write!(
                svg,
                r#"<line class="edge" x1="{:.1}" y1="{:.1}" x2="{rx:.1}" y2="{:.1}" marker-end="url(#arrow)"/>"#,
                lx + BOX_W,
                ly + BOX_H / 2.0,
                ry + BOX_H / 2.0
            );
            node(&mut svg, COL[col], y, o, "node");
        }
    }
    node(&mut svg, COL[1], cy, center, "node center");
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod lineage_tests {
    use super::*;

    #[test]
    fn a_node_per_object_and_an_edge_per_link_all_escaped() {
        let svg = lineage(
            "sales",
            &["raw.orders".into(), "batch:<7>".into()],
            &["kpi.net".into()],
        );
        assert_eq!(svg.matches("<g class=\"node").count(), 4);
        assert_eq!(svg.matches("class=\"edge\"").count(), 3);
        assert!(svg.contains("batch:&lt;7&gt;") && !svg.contains("<7>"));
        assert!(lineage("x", &[], &[]).contains("0 upstream, 0 downstream"));
    }
}
