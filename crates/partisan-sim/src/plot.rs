//! A small SVG line chart, so experiment figures can be looked at without other tools.

use std::fmt::Write;

const W: f64 = 800.0;
const H: f64 = 460.0;
const L: f64 = 80.0;
const R: f64 = 30.0;
const T: f64 = 70.0;
const B: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// How the axes are laid out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Axes {
    /// Logarithmic y axis (all values must be positive).
    pub log_y: bool,
    /// Lowest y value shown, when the data should not decide it (e.g. 0).
    pub y_min: Option<f64>,
    /// Highest y value shown, when the data should not decide it (e.g. 1).
    pub y_max: Option<f64>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// About `n` round tick values covering `lo..=hi`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let (k0, k1) = (
        (lo / step - 1e-9).ceil() as i64,
        (hi / step + 1e-9).floor() as i64,
    );
    let mut v = Vec::new();
    for k in k0..=k1 {
        // Rounded so labels and comparisons see 0.6, not 0.6000000000000001.
        v.push((k as f64 * step * 1e9).round() / 1e9);
    }
    v
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-2) {
        format!("{v:.0e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// An SVG chart of `series` (label, points (x, y)), with the legend in one row between the
/// title and the plot area.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    axes: Axes,
) -> String {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let fy = |y: f64| if axes.log_y { y.max(1e-12).log10() } else { y };
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(fy(p.1)), b.max(fy(p.1)))
    });
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some(m) = axes.y_min {
        y0 = fy(m).min(y0);
    }
    if let Some(m) = axes.y_max {
        y1 = fy(m).max(y1);
    }
    if axes.log_y {
        y0 = y0.floor();
        y1 = y1.ceil().max(y0 + 1.0);
    } else if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (fy(y) - y0) / (y1 - y0) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="26" text-anchor="middle" font-size="15">{}</text>"#,
        (W - R + L) / 2.0,
        esc(title)
    );
    let y_ticks: Vec<f64> = if axes.log_y {
        (y0 as i32..=y1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        ticks(y0, y1, 8)
    };
    for y in y_ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{p:.1}" y2="{p:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            py(y) + 4.0,
            label(y),
            p = py(y),
        );
    }
    for x in ticks(x0, x1, 10) {
        let _ = writeln!(
            s,
            r##"<line x1="{p:.1}" x2="{p:.1}" y1="{T}" y2="{}" stroke="#f0f0f0"/><text x="{p:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 16.0,
            label(x),
            p = px(x),
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{L}" x2="{L}" y1="{T}" y2="{b}" stroke="black"/><line x1="{L}" x2="{}" y1="{b}" y2="{b}" stroke="black"/>"#,
        W - R,
        b = H - B,
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (W - R + L) / 2.0,
        H - 18.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (H - B + T) / 2.0,
        esc(y_label)
    );
    for (k, (name, points)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                px(x),
                py(y)
            );
        }
        // Legend in one row between the title and the plot area, so it never hides data.
        let lx = L + series[..k]
            .iter()
            .map(|(n, _)| 40.0 + 7.0 * n.len() as f64)
            .sum::<f64>();
        let ly = 52.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let t = ticks(250.0, 1000.0, 10);
        assert!(t.first().copied() >= Some(250.0) && t.last().copied() <= Some(1000.0));
        assert!(
            t.windows(2).all(|w| (w[1] - w[0] - 100.0).abs() < 1e-9),
            "{t:?}"
        );
    }

    #[test]
    fn chart_has_one_line_per_series_and_escapes_text() {
        let svg = line_chart(
            "a < b",
            "x",
            "y",
            &[
                ("s1".into(), vec![(0.0, 1.0), (1.0, 2.0)]),
                ("s2".into(), vec![(0.0, 10.0), (1.0, 1000.0)]),
            ],
            Axes {
                log_y: true,
                ..Axes::default()
            },
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
