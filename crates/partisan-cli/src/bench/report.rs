//! Results: one JSON object per line with `--json`, otherwise a table on stdout.

use std::io::Write;

use serde::Serialize;

use super::CommonArgs;

/// Fields every result line carries.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Always `partisan` (the Erlang scripts print `disterl`).
    pub system: &'static str,
    /// `oneway`, `echo` or `hol`.
    pub bench: &'static str,
    /// Channel carrying the workload.
    pub channel: String,
    /// Lanes of that channel.
    pub parallelism: u16,
    /// Tokio worker threads per node process.
    pub threads: String,
    /// Seconds measured.
    pub duration_s: f64,
}

impl Meta {
    /// The meta fields of a run of `bench` with these options.
    pub fn new(bench: &'static str, c: &CommonArgs) -> Self {
        Meta {
            system: "partisan",
            bench,
            channel: c.net.channel_name().to_string(),
            parallelism: c
                .net
                .channel
                .as_ref()
                .map_or(c.net.parallelism, |(_, p)| *p),
            threads: c.net.threads_label(),
            duration_s: c.duration().as_secs_f64(),
        }
    }
}

/// A result that can be printed as a table row.
pub trait Row: Serialize {
    /// Column titles.
    fn header() -> Vec<&'static str>;
    /// Cells, in the order of [`Row::header`].
    fn cells(&self) -> Vec<String>;
}

/// Prints results as they come.
pub struct Printer {
    json: bool,
    widths: Vec<usize>,
}

impl Printer {
    /// A printer for rows of type `R`.
    pub fn new<R: Row>(json: bool, title: &str) -> Self {
        let widths: Vec<usize> = R::header().iter().map(|h| h.len().max(9)).collect();
        if !json {
            println!("{title}");
            let cells: Vec<String> = R::header().iter().map(|s| s.to_string()).collect();
            println!("{}", line(&widths, &cells));
        }
        Printer { json, widths }
    }

    /// Prints one result.
    pub fn print<R: Row>(&self, r: &R) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            writeln!(out, "{}", line(&self.widths, &r.cells()))?;
        }
        out.flush()?;
        Ok(())
    }
}

fn line(widths: &[usize], cells: &[String]) -> String {
    cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// A rate with thousands grouped, e.g. `1_234_567` as `1,234,567`.
pub fn grouped(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Rounds to one decimal, for JSON fields.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_thousands() {
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(0.0), "0");
        assert_eq!(round1(1.26), 1.3);
    }
}
