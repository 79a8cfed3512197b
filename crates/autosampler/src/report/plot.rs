//! Plots drawn with `plotters` into an RGB buffer and written as PNG atomically. The font is
//! embedded (assets/DejaVuSans.ttf), so labels render on machines without fonts.
use crate::data::split::shot_group;
use crate::{fsx, invalid, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TTF"));
    });
}

/// Colours of the shot groups (many, medium, few).
fn group_colour(n: usize) -> RGBColor {
    match shot_group(n) {
        "many" => RGBColor(31, 119, 180),
        "medium" => RGBColor(255, 127, 14),
        _ => RGBColor(214, 39, 40),
    }
}

/// The x tick label at `x` of a per-class chart: key points fall on multiples of ½, and the bar
/// centres (i + ½) get the class name (the index above 20 classes, every ⌈C/20⌉-th class).
fn class_tick(x: f64, classes: &[String]) -> String {
    let c = classes.len();
    let i = x.floor() as usize;
    if i < c && i.is_multiple_of(c.div_ceil(20).max(1)) && ((x - i as f64) - 0.5).abs() < 1e-6 {
        if c <= 20 {
            classes[i].clone()
        } else {
            i.to_string()
        }
    } else {
        String::new()
    }
}

/// The legend box every chart uses.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(position)
        .draw()
}

/// Encodes an RGB buffer as PNG bytes.
fn png_bytes(buf: Vec<u8>, w: u32, h: u32) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer matches size");
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| invalid!("cannot encode PNG: {e}"))?;
    Ok(out)
}

/// Bar chart of training images per class (log scale), coloured by shot group, with the
/// validation count drawn as a line of dots; written to `path` as PNG.
pub fn class_histogram(
    path: &Path,
    title: &str,
    classes: &[String],
    train: &[usize],
    val: &[usize],
) -> Result<()> {
    draw_png(path, 1000, 520, |root| {
        draw_histogram(root, title, classes, train, val).map_err(|e| e.to_string())
    })
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    classes: &[String],
    train: &[usize],
    val: &[usize],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let c = train.len();
    let max = train.iter().chain(val).copied().max().unwrap_or(1).max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(if c <= 20 { 70 } else { 40 })
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..c as f64, (0.8f64..max * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * c.min(20) + 1)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| class_tick(*x, classes))
        .x_desc(if c <= 20 { "class" } else { "class index" })
        .y_desc("training images (log scale)")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (group, n) in [("many (> 100)", 1000), ("medium (20–100)", 50), ("few (< 20)", 5)] {
        let col = group_colour(n);
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(group)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
    }
    chart.draw_series(train.iter().enumerate().map(|(i, &n)| {
        let x0 = i as f64 + 0.1;
        Rectangle::new(
            [(x0, 0.8), (x0 + 0.8, (n as f64).max(0.8))],
            group_colour(n).filled(),
        )
    }))?;
    if val.iter().any(|&v| v > 0) {
        chart
            .draw_series(
                val.iter()
                    .enumerate()
                    .map(|(i, &v)| Circle::new((i as f64 + 0.5, (v as f64).max(0.8)), 3, BLACK.filled())),
            )?
            .label("validation (held out)")
            .legend(|(x, y)| Circle::new((x + 6, y), 3, BLACK.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// A text histogram, one line per class: name, count, group and a bar scaled to `width`.
pub fn text_histogram(
    classes: &[String],
    train: &[usize],
    val: &[usize],
    test: &[usize],
    width: usize,
) -> String {
    let max = train.iter().copied().max().unwrap_or(1).max(1);
    let name_w = classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 24);
    let mut s = format!(
        "{:>4}  {:<name_w$}  {:>6}  {:>5}  {:>5}  {:<6}\n",
        "#", "class", "train", "val", "test", "group"
    );
    for (i, name) in classes.iter().enumerate() {
        let n = train[i];
        let bar = "█".repeat(((n as f64 / max as f64) * width as f64).ceil() as usize);
        let name: String = name.chars().take(name_w).collect();
        s.push_str(&format!(
            "{i:>4}  {name:<name_w$}  {n:>6}  {:>5}  {:>5}  {:<6}  {bar}\n",
            val[i],
            test[i],
            shot_group(n)
        ));
    }
    s
}

fn draw_png(
    path: &Path,
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| invalid!("cannot draw {}: {e}", path.display()))?;
        root.present()
            .map_err(|e| invalid!("cannot draw {}: {e}", path.display()))?;
    }
    fsx::write_atomic(path, &png_bytes(buf, w, h)?)
}

/// The search's reward curve (the paper's Fig. 2 right): mean and best-so-far reward per
/// trajectory, in percent.
pub fn reward_curve(path: &Path, mean: &[f64], best: &[f64], fixed: &[(String, f64)]) -> Result<()> {
    let pct = |v: &[f64]| v.iter().map(|x| x * 100.0).collect::<Vec<_>>();
    let mut series = vec![
        ("mean of the M samples".to_string(), pct(mean)),
        ("best so far".to_string(), pct(best)),
    ];
    // each fixed sampler's reward, scored the same way, as a horizontal line
    series.extend(
        fixed
            .iter()
            .map(|(name, r)| (format!("{name} (fixed)"), vec![r * 100.0; mean.len().max(2)])),
    );
    let named: Vec<(&str, Vec<f64>)> = series.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    lines(
        path,
        "class-weight search: validation reward (search half)",
        "trajectory",
        "val reward (%)",
        &named,
    )
}

/// Line plot of series over 1, 2, 3, … (values as given).
pub fn lines(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    draw_png(path, 900, 480, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let all = || series.iter().flat_map(|(_, v)| v.iter().cloned());
        let lo = all().fold(f64::MAX, f64::min);
        let hi = all().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.1).max(0.5);
        let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0).max(2);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, (lo - pad)..(hi + pad))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(ylabel)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        for (k, (label, values)) in series.iter().enumerate() {
            let colour = colours[k % colours.len()];
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(i, v)| (i as f64 + 1.0, *v)),
                    colour.stroke_width(2),
                ))
                .map_err(e)?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight).map_err(e)
    })
}

/// Per-class weights side by side: each series one colour, classes along x.
pub fn weight_bars(path: &Path, title: &str, classes: &[String], series: &[(&str, Vec<f64>)]) -> Result<()> {
    bars(path, title, "sampling weight", classes, series)
}

/// Grouped bars per class: each series one colour, classes along x.
pub fn bars(
    path: &Path,
    title: &str,
    ylabel: &str,
    classes: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    let c = classes.len();
    draw_png(path, 1000, 500, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let hi = series
            .iter()
            .flat_map(|(_, v)| v.iter())
            .cloned()
            .fold(0.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(if c <= 20 { 60 } else { 40 })
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..c as f64, 0f64..hi.max(1e-6))
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * c.min(20) + 1)
            .x_label_formatter(&|x| class_tick(*x, classes))
            .y_desc(ylabel)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        let colours = [
            RGBColor(214, 39, 40),
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
        ];
        let k = series.len().max(1) as f64;
        for (s, (name, v)) in series.iter().enumerate() {
            let col = colours[s % colours.len()];
            let w = 0.8 / k;
            chart
                .draw_series(v.iter().enumerate().map(|(i, &y)| {
                    let x0 = i as f64 + 0.1 + s as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w, y)], col.filled())
                }))
                .map_err(e)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_png_is_written_and_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hist.png");
        let classes: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        let train = crate::data::longtail::exp_counts(500, 10, 100.0);
        class_histogram(&p, "test", &classes, &train, &[20; 10]).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1000, 520));
        // bars in all three group colours are present
        let has = |c: RGBColor| img.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(group_colour(500)) && has(group_colour(50)) && has(group_colour(5)));
    }

    #[test]
    fn text_histogram_lines() {
        let t = text_histogram(&["a".into(), "b".into()], &[200, 10], &[5, 5], &[7, 7], 10);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("200") && lines[1].contains("many") && lines[1].ends_with(&"█".repeat(10)));
        assert!(lines[2].contains("few") && lines[2].ends_with("█"));
    }
}
