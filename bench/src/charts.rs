//! PNG charts of the throughput tables: requests/s per peer, and latency
//! percentiles per peer, one panel per load shape.
//!
//! Text is drawn by plotters' `ab_glyph` renderer with a TrueType font read
//! at run time ([`FONT`]), so the build needs no system library (no
//! fontconfig, no freetype). After [`enable`], every table that
//! [`crate::report::table`] renders, or that a scenario hands to [`add`], is
//! also drawn, and the markdown gets links to the images.

use std::collections::HashSet;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::Spread;

/// Debian `fonts-dejavu-core`.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The percentiles of the latency charts, as in the markdown tables.
pub const PERCENTILES: [(f64, &str); 3] = [(0.50, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// What the charts show of one table.
#[derive(Debug)]
pub struct Table {
    pub title: String,
    pub shapes: Vec<Shape>,
}

/// One load shape (`c10×m10`) of a table: one panel of each chart.
#[derive(Debug)]
pub struct Shape {
    pub load: String,
    pub peers: Vec<Peer>,
}

/// One peer under one load shape.
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    pub rounds: usize,
    /// Requests/s; `None` for a table without throughput (no throughput chart then).
    pub rps: Option<Spread>,
    /// Milliseconds, in the order of [`PERCENTILES`].
    pub latency_ms: [Spread; 3],
}

/// Where charts go once [`enable`]d, and the names taken so far.
struct Output {
    dir: PathBuf,
    /// `dir` relative to the report's directory, `/`-separated.
    link_dir: String,
    names: HashSet<String>,
}

impl Output {
    /// A file stem for `name` not taken yet in this run (`r1`, `r1-2`, ...).
    fn claim(&mut self, name: &str) -> String {
        let base = slug(name);
        let mut name = base.clone();
        let mut n = 1;
        while !self.names.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
        name
    }

    /// The markdown link target of a chart file written into `dir`.
    fn link(&self, file: String) -> String {
        let link = if self.link_dir == "." {
            file
        } else {
            format!("{}/{file}", self.link_dir)
        };
        link.replace(' ', "%20")
    }
}

/// Process-wide so that every scenario's `report::table` call draws its
/// table without passing a handle through every scenario.
static OUTPUT: Mutex<Option<Output>> = Mutex::new(None);

/// Whether the font is registered with plotters (once per process).
static FONT_REGISTERED: Mutex<bool> = Mutex::new(false);

/// Draws every table from now on into `dir` (created if needed); links in the
/// report are relative to `report_dir`, where the markdown will be written.
pub fn enable(dir: &Path, report_dir: &Path, font: &Path) -> Result<(), String> {
    load_font(font)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let link_dir = relative(dir, report_dir)?;
    *OUTPUT.lock().unwrap_or_else(PoisonError::into_inner) = Some(Output {
        dir: dir.to_path_buf(),
        link_dir,
        names: HashSet::new(),
    });
    Ok(())
}

/// Reads `path` and registers it with plotters as the `sans-serif` font.
pub fn load_font(path: &Path) -> Result<(), String> {
    let mut registered = FONT_REGISTERED
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if *registered {
        return Ok(());
    }
    let bytes = read_font(path)?;
    // plotters keeps fonts for the whole process and wants them 'static.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a TrueType font", path.display()))?;
    *registered = true;
    Ok(())
}

fn read_font(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the chart font {} ({e}; Debian package fonts-dejavu-core)",
            path.display()
        )
    })
}

/// Draws `table` under `name` (a file stem, made unique in this run) if
/// charts are enabled; returns the markdown that shows the images, or
/// nothing. A chart that cannot be written costs one line on stderr.
pub fn add(name: &str, table: &Table) -> String {
    let mut output = OUTPUT.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(output) = output.as_mut() else {
        return String::new();
    };
    let name = output.claim(name);
    match write(&output.dir, &name, table) {
        Ok(files) => {
            let alt = table.title.replace(['[', ']'], "");
            let mut md = String::new();
            for (file, what) in files {
                md.push_str(&format!("![{alt}: {what}]({})\n\n", output.link(file)));
            }
            md
        }
        Err(e) => {
            eprintln!("charts: cannot draw {name}: {e}");
            String::new()
        }
    }
}

/// How figures grow with a size (R13: per node count), one panel per
/// figure, one line per process.
#[derive(Debug)]
pub struct Growth {
    pub title: String,
    /// What the x axis counts (`nodes`).
    pub x_desc: String,
    pub panels: Vec<GrowthPanel>,
}

/// One figure of a [`Growth`] chart.
#[derive(Debug)]
pub struct GrowthPanel {
    /// The figure and its unit (`RSS (MiB)`).
    pub y_desc: String,
    /// One line per process: its name and its (size, value) points.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws a [`Growth`] chart (once [`enable`]d); returns the markdown image
/// link, or nothing.
pub fn add_growth(name: &str, growth: &Growth) -> String {
    let mut output = OUTPUT.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(output) = output.as_mut() else {
        return String::new();
    };
    let name = output.claim(name);
    let file = format!("{name}.png");
    match growth_chart(&output.dir.join(&file), growth) {
        Ok(()) => {
            let alt = growth.title.replace(['[', ']'], "");
            format!("![{alt}]({})\n\n", output.link(file))
        }
        Err(e) => {
            eprintln!("charts: cannot draw {name}: {e}");
            String::new()
        }
    }
}

fn growth_chart(path: &Path, growth: &Growth) -> Result2<()> {
    let root = BitMapBackend::new(path, (WIDTH, THROUGHPUT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut names: Vec<String> = Vec::new();
    for (name, _) in growth.panels.iter().flat_map(|p| &p.series) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let body = header(
        &root,
        &growth.title,
        &format!("Each point is one size of the run; x: {}", growth.x_desc),
        &names,
    )?;
    let panels = body.split_evenly((1, growth.panels.len().max(1)));
    for (area, panel) in panels.iter().zip(&growth.panels) {
        let points = panel.series.iter().flat_map(|(_, p)| p);
        let (x_max, y_max) = points.fold((0.0f64, 0.0f64), |(x, y), (px, py)| {
            (x.max(*px), y.max(*py))
        });
        let (x_top, x_ticks) = linear_ticks(x_max * 1.05);
        let (y_top, y_ticks) = linear_ticks(y_max * 1.12);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.y_desc, (FONT_NAME, 20))
            .margin_left(8)
            .margin_right(20)
            .margin_bottom(14)
            .x_label_area_size(40)
            .y_label_area_size(62)
            .build_cartesian_2d(ticked(0.0..x_top, x_ticks), ticked(0.0..y_top, y_ticks))?;
        chart
            .configure_mesh()
            .x_desc(&growth.x_desc)
            .x_label_formatter(&|v| count_label(*v))
            .y_label_formatter(&|v| trim(format!("{v:.1}")))
            .label_style((FONT_NAME, 15))
            .axis_desc_style((FONT_NAME, 16))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for (name, series) in &panel.series {
            let color = color_of(&names, name);
            chart.draw_series([PathElement::new(series.clone(), color.stroke_width(2))])?;
            chart.draw_series(
                series
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
            )?;
        }
    }
    root.present()?;
    Ok(())
}

/// A file stem from a table title: its id before the first `:` (`R5: ...` →
/// `r5`), or the whole title, as lowercase ASCII words joined by `-`.
pub fn name_of(title: &str) -> String {
    let id = title.split_once(':').map_or(title, |(id, _)| id);
    let mut name = slug(id);
    if name.len() > 48 {
        let cut = name[..48].rfind('-').unwrap_or(48);
        name.truncate(cut);
    }
    name
}

fn slug(s: &str) -> String {
    let words: Vec<String> = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        "table".to_string()
    } else {
        words.join("-")
    }
}

/// `target` relative to `base` (both must exist), `/`-separated.
fn relative(target: &Path, base: &Path) -> Result<String, String> {
    let canonical = |p: &Path| {
        p.canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", p.display()))
    };
    let (target, base) = (canonical(target)?, canonical(base)?);
    let common = target
        .components()
        .zip(base.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<String> = base
        .components()
        .skip(common)
        .map(|_| "..".into())
        .collect();
    parts.extend(
        target
            .components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Result2<T> = Result<T, Box<dyn Error>>;

const WIDTH: u32 = 1200;
const THROUGHPUT_HEIGHT: u32 = 560;
const LATENCY_HEIGHT: u32 = 600;
const FONT_NAME: &str = "sans-serif";

/// Tableau 10: distinct in colour and in grey.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Writes `<name>-throughput.png` (when the table has throughput) and
/// `<name>-latency.png` into `dir`; returns the file names with what each
/// shows. The font must be loaded ([`load_font`]).
pub fn write(dir: &Path, name: &str, table: &Table) -> Result2<Vec<(String, &'static str)>> {
    let peers = peer_names(table);
    let rounds = rounds_text(table);
    let mut files = Vec::new();
    let has_rps = table
        .shapes
        .iter()
        .flat_map(|s| &s.peers)
        .any(|p| p.rps.is_some());
    if has_rps {
        let file = format!("{name}-throughput.png");
        throughput(&dir.join(&file), table, &peers, &rounds)?;
        files.push((file, "throughput per peer"));
    }
    let file = format!("{name}-latency.png");
    latency(&dir.join(&file), table, &peers, &rounds)?;
    files.push((file, "latency percentiles per peer"));
    Ok(files)
}

/// Every peer of the table, in order of first appearance: one colour each.
fn peer_names(table: &Table) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in table.shapes.iter().flat_map(|s| &s.peers) {
        if !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    names
}

fn rounds_text(table: &Table) -> String {
    let counts: HashSet<usize> = table
        .shapes
        .iter()
        .flat_map(|s| &s.peers)
        .map(|p| p.rounds)
        .collect();
    match counts.into_iter().collect::<Vec<_>>()[..] {
        [1] => "1 round".to_string(),
        [n] => format!("median of {n} rounds"),
        _ => "median of the rounds".to_string(),
    }
}

fn color_of(peers: &[String], name: &str) -> RGBColor {
    let i = peers.iter().position(|p| p == name).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// Title (wrapped), subtitle and legend; returns the area below them.
fn header<'a>(root: &Area<'a>, title: &str, subtitle: &str, peers: &[String]) -> Result2<Area<'a>> {
    let width = root.dim_in_pixel().0 as i32;
    let title_style = (FONT_NAME, 24).into_font().color(&BLACK);
    let sub_style = (FONT_NAME, 16).into_font().color(&RGBColor(80, 80, 80));
    let legend_style = (FONT_NAME, 16).into_font().color(&BLACK);
    let mut y = 12;
    for line in wrap(root, title, &title_style, width - 40)? {
        root.draw_text(&line, &title_style, (20, y))?;
        y += 30;
    }
    for line in wrap(root, subtitle, &sub_style, width - 40)? {
        root.draw_text(&line, &sub_style, (20, y))?;
        y += 22;
    }
    y += 8;
    let mut x = 20;
    for (i, peer) in peers.iter().enumerate() {
        let (w, _) = root.estimate_text_size(peer, &legend_style)?;
        let entry = 22 + w as i32 + 28;
        if x > 20 && x + entry > width - 20 {
            x = 20;
            y += 24;
        }
        let color = PALETTE[i % PALETTE.len()];
        root.draw(&Rectangle::new(
            [(x, y - 2), (x + 15, y + 13)],
            color.filled(),
        ))?;
        root.draw_text(peer, &legend_style, (x + 22, y))?;
        x += entry;
    }
    y += 30;
    Ok(root.split_vertically(y).1)
}

/// Greedy word wrap to `width` pixels.
fn wrap(area: &Area<'_>, text: &str, style: &TextStyle<'_>, width: i32) -> Result2<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && area.estimate_text_size(&candidate, style)?.0 as i32 > width {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    Ok(lines)
}

fn throughput(path: &Path, table: &Table, peers: &[String], rounds: &str) -> Result2<()> {
    let root = BitMapBackend::new(path, (WIDTH, THROUGHPUT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = header(
        &root,
        &table.title,
        &format!(
            "Throughput in requests/s per peer and load (higher is better): bar = {rounds}, whisker = min–max"
        ),
        peers,
    )?;
    let panels = body.split_evenly((1, table.shapes.len().max(1)));
    for (panel, shape) in panels.iter().zip(&table.shapes) {
        let bars: Vec<(RGBColor, Spread)> = shape
            .peers
            .iter()
            .filter_map(|p| Some((color_of(peers, &p.name), p.rps?)))
            .collect();
        let top = bars
            .iter()
            .map(|(_, s)| s.max)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let (top, ticks) = linear_ticks(top * 1.12);
        let n = bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("load {}", shape.load), (FONT_NAME, 20))
            .margin_left(8)
            .margin_right(20)
            .margin_bottom(14)
            .x_label_area_size(6)
            .y_label_area_size(62)
            .build_cartesian_2d(ticked(-0.5..n - 0.5, Vec::new()), ticked(0.0..top, ticks))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("requests/s")
            .y_label_formatter(&|v| count_label(*v))
            .label_style((FONT_NAME, 15))
            .axis_desc_style((FONT_NAME, 16))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for (i, (color, s)) in bars.iter().enumerate() {
            if !s.median.is_finite() {
                continue;
            }
            let x = i as f64;
            chart.draw_series([Rectangle::new(
                [(x - 0.34, 0.0), (x + 0.34, s.median)],
                color.filled(),
            )])?;
            whisker(&mut chart, x, 0.34, s.min, s.max)?;
            let label = EmptyElement::at((x, s.max.max(s.median)))
                + Text::new(
                    format!("{:.0}", s.median),
                    (0, -6),
                    (FONT_NAME, 15)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                );
            chart.draw_series([label])?;
        }
    }
    root.present()?;
    Ok(())
}

fn latency(path: &Path, table: &Table, peers: &[String], rounds: &str) -> Result2<()> {
    let root = BitMapBackend::new(path, (WIDTH, LATENCY_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    // Log scale when a panel spans more than this factor (from its lowest
    // min to its highest max), so that p50 bars stay visible next to p99.9.
    const LOG_ABOVE: f64 = 20.0;
    let span = |shape: &Shape| {
        let values = shape.peers.iter().flat_map(|p| &p.latency_ms);
        let lo = values
            .clone()
            .map(|s| s.min)
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let hi = values
            .map(|s| s.max)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        (lo, hi)
    };
    let log = table.shapes.iter().any(|s| {
        let (lo, hi) = span(s);
        lo.is_finite() && hi / lo > LOG_ABOVE
    });
    let body = header(
        &root,
        &table.title,
        &format!(
            "Latency percentiles in ms per peer and load (lower is better): bar = {rounds}, whisker = min–max{}",
            if log { "; log scale" } else { "" }
        ),
        peers,
    )?;
    let panels = body.split_evenly((1, table.shapes.len().max(1)));
    let percentiles: Vec<f64> = (0..PERCENTILES.len()).map(|i| i as f64).collect();
    for (panel, shape) in panels.iter().zip(&table.shapes) {
        let (lo, hi) = span(shape);
        // y is in ms, or log10(ms) on a log scale.
        let to_y = |ms: f64| if log { ms.log10() } else { ms };
        let (range, ticks) = if log {
            let (lo, hi) = if lo.is_finite() && hi > 0.0 {
                (lo / 1.6, hi * 1.6)
            } else {
                (0.01, 1.0)
            };
            let ticks = log_ticks(lo, hi).into_iter().map(f64::log10).collect();
            (lo.log10()..hi.log10(), ticks)
        } else {
            let (top, ticks) = linear_ticks(hi * 1.08);
            (0.0..top, ticks)
        };
        let bottom = range.start;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("load {}", shape.load), (FONT_NAME, 20))
            .margin_left(8)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(30)
            .y_label_area_size(62)
            .build_cartesian_2d(
                ticked(-0.5..PERCENTILES.len() as f64 - 0.5, percentiles.clone()),
                ticked(range.clone(), ticks),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| {
                PERCENTILES
                    .get(x.round() as usize)
                    .map_or(String::new(), |(_, label)| label.to_string())
            })
            .y_label_formatter(&|y| ms_label(if log { 10f64.powf(*y) } else { *y }))
            .y_desc(if log { "ms (log scale)" } else { "ms" })
            .label_style((FONT_NAME, 15))
            .axis_desc_style((FONT_NAME, 16))
            .light_line_style(TRANSPARENT)
            .draw()?;
        let k = shape.peers.len().max(1) as f64;
        let slot = 0.84 / k;
        for (g, _) in PERCENTILES.iter().enumerate() {
            for (j, peer) in shape.peers.iter().enumerate() {
                let s = peer.latency_ms[g];
                if !s.median.is_finite() {
                    continue;
                }
                let clamp = |v: f64| to_y(v).clamp(range.start, range.end);
                let x0 = g as f64 - 0.42 + j as f64 * slot;
                let (x1, x) = (x0 + slot * 0.86, x0 + slot * 0.43);
                let color = color_of(peers, &peer.name);
                chart.draw_series([Rectangle::new(
                    [(x0, bottom), (x1, clamp(s.median))],
                    color.filled(),
                )])?;
                whisker(&mut chart, x, slot * 0.43, clamp(s.min), clamp(s.max))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// An `f64` axis with labels and grid lines exactly at `ticks` (plotters'
/// own `WithKeyPoints` over `f64` cannot take a label formatter).
struct Ticked {
    range: RangedCoordf64,
    ticks: Vec<f64>,
}

fn ticked(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Ticked {
    Ticked {
        range: range.into(),
        ticks,
    }
}

impl Ranged for Ticked {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.range.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points only: no light grid lines in between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.range()
    }
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// A vertical min–max line at `x` with caps as wide as half the bar (of
/// half-width `bar`), 18 px at most.
fn whisker(chart: &mut Chart<'_, '_>, x: f64, bar: f64, min: f64, max: f64) -> Result2<()> {
    if !(min.is_finite() && max.is_finite()) {
        return Ok(());
    }
    let range = chart.x_range();
    let pixels = chart.plotting_area().dim_in_pixel().0.max(1) as f64;
    let half = (bar / 2.0).min(9.0 * (range.end - range.start) / pixels);
    let style = BLACK.stroke_width(2);
    chart.draw_series([
        PathElement::new(vec![(x, min), (x, max)], style),
        PathElement::new(vec![(x - half, min), (x + half, min)], style),
        PathElement::new(vec![(x - half, max), (x + half, max)], style),
    ])?;
    Ok(())
}

/// A round top above `max` (1, 2 or 5 × 10^k steps) and the ticks up to it.
fn linear_ticks(max: f64) -> (f64, Vec<f64>) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, vec![0.0, 0.5, 1.0]);
    }
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let top = (max / step).ceil() * step;
    let ticks = (0..=(top / step).round() as usize)
        .map(|i| i as f64 * step)
        .collect();
    (top, ticks)
}

/// 1, 2 and 5 × 10^k between `lo` and `hi` (fewer when the span is wide).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let mantissas: &[f64] = if decades > 3.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    for k in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in mantissas {
            // m / 10^-k rather than m × 10^k: 0.1, not 0.10000000000000002.
            let v = if k < 0 {
                m / 10f64.powi(-k)
            } else {
                m * 10f64.powi(k)
            };
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

fn count_label(v: f64) -> String {
    if v >= 1_000_000.0 {
        trim(format!("{:.2}", v / 1_000_000.0)) + "M"
    } else if v >= 1000.0 {
        trim(format!("{:.1}", v / 1000.0)) + "k"
    } else {
        format!("{v:.0}")
    }
}

fn ms_label(v: f64) -> String {
    trim(format!("{v:.3}"))
}

/// `2.500` → `2.5`, `3.0` → `3`.
fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(median: f64) -> Spread {
        Spread {
            median,
            min: median * 0.9,
            max: median * 1.2,
        }
    }

    fn sample(with_rps: bool) -> Table {
        let peer = |name: &str, rps: f64, p50: f64| Peer {
            name: name.to_string(),
            rounds: 3,
            rps: with_rps.then(|| spread(rps)),
            latency_ms: [spread(p50), spread(p50 * 2.0), spread(p50 * 8.0)],
        };
        Table {
            title: "R0: a sample table → charts, c1×m1 and c50".to_string(),
            shapes: vec![
                Shape {
                    load: "c1×m1".to_string(),
                    peers: vec![
                        peer("baseline", 6000.0, 0.15),
                        peer("toolkit", 5500.0, 0.17),
                    ],
                },
                Shape {
                    load: "c50".to_string(),
                    peers: vec![
                        peer("baseline", 40000.0, 1.2),
                        peer("toolkit", 36000.0, 1.4),
                    ],
                },
            ],
        }
    }

    /// Width and height from a PNG's signature and IHDR chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn writes_throughput_and_latency_pngs() {
        // A missing font fails the test (its message names the Debian package).
        load_font(Path::new(FONT)).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let files = write(dir.path(), "r0", &sample(true)).expect("charts written");
        let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["r0-throughput.png", "r0-latency.png"]);
        assert_eq!(
            png_size(&dir.path().join("r0-throughput.png")),
            (WIDTH, THROUGHPUT_HEIGHT)
        );
        assert_eq!(
            png_size(&dir.path().join("r0-latency.png")),
            (WIDTH, LATENCY_HEIGHT)
        );

        // Latency only when no peer has throughput.
        let files = write(dir.path(), "r0-lat", &sample(false)).expect("chart written");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "r0-lat-latency.png");
    }

    #[test]
    fn a_missing_font_is_an_error_not_a_panic() {
        let e = read_font(Path::new("/nonexistent/font.ttf")).expect_err("no such file");
        assert!(e.contains("/nonexistent/font.ttf"), "{e}");
        assert!(e.contains("fonts-dejavu-core"), "{e}");
    }

    #[test]
    fn names_and_links() {
        assert_eq!(name_of("R5: balanced client (1 backend)"), "r5");
        assert_eq!(name_of("R6/R7: discovery"), "r6-r7");
        assert_eq!(slug("r1 multi_thread"), "r1-multi-thread");
        assert_eq!(slug("→"), "table");
        let dir = tempfile::tempdir().expect("temp dir");
        let charts = dir.path().join("docs/benchmarks");
        std::fs::create_dir_all(&charts).expect("dirs");
        assert_eq!(
            relative(&charts, &dir.path().join("docs")).as_deref(),
            Ok("benchmarks")
        );
        assert_eq!(relative(&charts, &charts).as_deref(), Ok("."));
        let other = dir.path().join("out");
        std::fs::create_dir_all(&other).expect("dirs");
        assert_eq!(
            relative(&charts, &other).as_deref(),
            Ok("../docs/benchmarks")
        );
    }

    #[test]
    fn ticks() {
        assert_eq!(
            linear_ticks(9.0),
            (10.0, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
        );
        assert_eq!(linear_ticks(56_000.0).0, 60_000.0);
        assert_eq!(log_ticks(0.09, 3.0), vec![0.1, 0.2, 0.5, 1.0, 2.0]);
        assert_eq!(count_label(52_500.0), "52.5k");
        assert_eq!(count_label(60_000.0), "60k");
        assert_eq!(ms_label(0.250), "0.25");
    }
}
