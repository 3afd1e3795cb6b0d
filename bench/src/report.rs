//! Medians with min–max, ratios to a baseline, as markdown (and as charts,
//! see [`crate::charts`]).

use std::fmt::Write;

use crate::charts;
use crate::load::Round;
use crate::stats::Spread;

/// All rounds of one peer in one scenario and shape.
#[derive(Debug)]
pub struct PeerRounds {
    pub peer: String,
    pub rounds: Vec<Round>,
}

fn fmt_rps(s: Spread) -> String {
    format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
}

fn fmt_ms(s: Spread) -> String {
    format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max)
}

impl PeerRounds {
    pub fn rps(&self) -> Spread {
        Spread::of(self.rounds.iter().map(Round::rps))
    }
    pub fn pct(&self, q: f64) -> Spread {
        Spread::of(self.rounds.iter().map(|r| r.ms(q)))
    }
    pub fn errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.errors).sum()
    }
}

/// One table: the first peer of each shape is the baseline of the ratios.
/// With charts enabled, also draws it (files named after the title's id,
/// `R5: ...` → `r5-throughput.png`) and links the images below the table.
pub fn table(title: &str, shapes: &[(String, Vec<PeerRounds>)]) -> String {
    table_named(&charts::name_of(title), title, shapes)
}

/// [`table`] with the charts' file stem given: `r1 multi_thread` →
/// `r1-multi-thread-throughput.png`, `r1-multi-thread-latency.png`.
pub fn table_named(name: &str, title: &str, shapes: &[(String, Vec<PeerRounds>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "| load | peer | req/s median (min–max) | p50 ms | p99 ms | p99.9 ms | errors | req/s ratio | p99 ratio |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (shape, peers) in shapes {
        let Some(base) = peers.first() else { continue };
        let base_rps = base.rps().median;
        let base_p99 = base.pct(0.99).median;
        for p in peers {
            let rps = p.rps();
            let p99 = p.pct(0.99);
            let _ = writeln!(
                out,
                "| {shape} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
                p.peer,
                fmt_rps(rps),
                fmt_ms(p.pct(0.50)),
                fmt_ms(p99),
                fmt_ms(p.pct(0.999)),
                p.errors(),
                rps.median / base_rps,
                p99.median / base_p99,
            );
        }
    }
    out.push('\n');
    out.push_str(&charts::add(name, &chart_table(title, shapes)));
    out
}

fn chart_table(title: &str, shapes: &[(String, Vec<PeerRounds>)]) -> charts::Table {
    charts::Table {
        title: title.to_string(),
        shapes: shapes
            .iter()
            .map(|(load, peers)| charts::Shape {
                load: load.clone(),
                peers: peers
                    .iter()
                    .map(|p| charts::Peer {
                        name: p.peer.clone(),
                        rounds: p.rounds.len(),
                        rps: Some(p.rps()),
                        latency_ms: charts::PERCENTILES.map(|(q, _)| p.pct(q)),
                    })
                    .collect(),
            })
            .collect(),
    }
}
