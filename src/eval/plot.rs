//! Plots for eval reports, drawn with plotters into an RGB buffer and written as PNG: per-label
//! F1 bars (tagging), the per-query nDCG histogram (retrieval) and nDCG against diversity over
//! the MMR sweep (recommendation). Text uses a font compiled into the binary, so a plot looks the
//! same on every machine and needs no system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

/// Canvas size of every plot.
const W: u32 = 800;
const H: u32 = 480;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing the plot: {0}")]
    Draw(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

/// plotters' text looks fonts up by family name; register the compiled-in one once.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate; failure would be a build bug.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// Draw with `draw` on a white canvas of `W` × `H` and write the PNG to `path`.
fn render(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    render_sized(path, (W, H), draw)
}

/// [`render`] on a canvas of `(w, h)` pixels.
fn render_sized(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    let io = |source| PlotError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let mut encoder = png::Encoder::new(file, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| io(std::io::Error::other(e)))?;
    writer
        .write_image_data(&buf)
        .map_err(|e| io(std::io::Error::other(e)))?;
    writer.finish().map_err(|e| io(std::io::Error::other(e)))
}

/// A padded axis range around `values` (never empty).
fn padded(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.15).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// nDCG@10 (y) against diversity (x) over an MMR λ sweep: one labelled dot per λ, joined in
/// sweep order. `points` are (λ, nDCG@10, diversity).
pub fn diversity_sweep(points: &[(f32, f64, f64)], path: &Path) -> Result<(), PlotError> {
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("nDCG@10 against diversity by MMR λ", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                padded(points.iter().map(|p| p.2)),
                padded(points.iter().map(|p| p.1)),
            )
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("diversity (mean pairwise distance in a list)")
            .y_desc("nDCG@10")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(draw_err)?;
        let blue = RGBColor(31, 90, 200);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.2, p.1)),
                blue.stroke_width(2),
            ))
            .map_err(draw_err)?;
        chart
            .draw_series(points.iter().map(|&(lambda, n, d)| {
                EmptyElement::at((d, n))
                    + Circle::new((0, 0), 5, RGBColor(200, 40, 40).filled())
                    + Text::new(format!("λ={lambda}"), (8, -18), ("sans-serif", 15))
            }))
            .map_err(draw_err)?;
        Ok(())
    })
}

/// One horizontal bar per label, F1 on the test set, best at the top, each named with its
/// support (the tagging suite's per-label table at a glance). `labels` are (label, F1, support).
/// The canvas grows with the number of labels so every name stays readable.
pub fn label_f1_bars(
    title: &str,
    labels: &[(String, f64, u64)],
    path: &Path,
) -> Result<(), PlotError> {
    let mut sorted: Vec<&(String, f64, u64)> = labels.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let n = sorted.len().max(1);
    let height = (120 + 16 * n as u32).max(H);
    render_sized(path, (W, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(200)
            .build_cartesian_2d(0f64..1f64, (0..n).into_segmented())
            .map_err(draw_err)?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => (n - 1)
                .checked_sub(*i)
                .and_then(|rank| sorted.get(rank))
                .map(|(l, _, s)| format!("{l} (n={s})"))
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&name)
            .x_desc(format!("F1 on the test set ({} labels)", sorted.len()))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(draw_err)?;
        let blue = RGBColor(31, 90, 200);
        chart
            .draw_series(sorted.iter().enumerate().map(|(rank, (_, f1, _))| {
                let row = n - 1 - rank;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row)),
                        (*f1, SegmentValue::Exact(row + 1)),
                    ],
                    blue.filled(),
                );
                bar.set_margin(2, 2, 0, 0);
                bar
            }))
            .map_err(draw_err)?;
        Ok(())
    })
}

/// Histogram of per-query nDCG@10 in ten bins of 0.1 (how many queries fail outright, how many
/// are perfect: what the mean hides).
pub fn ndcg_histogram(title: &str, values: &[f64], path: &Path) -> Result<(), PlotError> {
    let mut bins = [0u32; 10];
    for v in values {
        bins[((v * 10.0).floor() as usize).min(9)] += 1;
    }
    let top = bins.iter().copied().max().unwrap_or(1).max(1);
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..f64::from(top) * 1.1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(format!("nDCG@10 per query ({} queries)", values.len()))
            .y_desc("queries")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(draw_err)?;
        let blue = RGBColor(31, 90, 200);
        chart
            .draw_series(bins.iter().enumerate().map(|(i, &count)| {
                let x = i as f64 / 10.0;
                Rectangle::new(
                    [(x + 0.005, 0.0), (x + 0.095, f64::from(count))],
                    blue.filled(),
                )
            }))
            .map_err(draw_err)?;
        Ok(())
    })
}

/// One line of [`scale_curve`]: its name and (points, p99 ms, recall) per size.
pub type ScaleSeries = (String, Vec<(f64, f64, f64)>);

/// The store's scale curve: search p99 (left) and recall@k (right) against the number of points
/// (log scale), one line per series (a backend and quantization). `series` are
/// (name, [(points, p99 ms, recall)]).
pub fn scale_curve(series: &[ScaleSeries], path: &Path) -> Result<(), PlotError> {
    let colours = [
        RGBColor(31, 90, 200),
        RGBColor(200, 40, 40),
        RGBColor(30, 150, 60),
        RGBColor(150, 60, 170),
        RGBColor(220, 130, 20),
        RGBColor(90, 90, 90),
        RGBColor(20, 170, 190),
        RGBColor(140, 100, 40),
    ];
    let all = || series.iter().flat_map(|(_, points)| points.iter());
    let x = padded(all().map(|p| p.0.max(1.0).log10()));
    let latency = 0.0..all().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let recall = padded(all().map(|p| p.2).chain([1.0]));
    let recall = recall.start..recall.end.min(1.02);
    let thousands = |v: &f64| {
        let n = 10f64.powf(*v);
        if n >= 1e6 {
            format!("{:.1}M", n / 1e6)
        } else {
            format!("{:.0}k", n / 1e3)
        }
    };
    render_sized(path, (2 * W, H), |root| {
        let panels = root.split_evenly((1, 2));
        for (panel, right) in panels.iter().zip([false, true]) {
            let (caption, y_desc, y) = if right {
                (
                    "Recall@10 against exact search",
                    "recall@10",
                    recall.clone(),
                )
            } else {
                ("Search p99 latency (k = 10)", "p99 ms", latency.clone())
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, ("sans-serif", 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(x.clone(), y)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("points (log scale)")
                .y_desc(y_desc)
                .x_label_formatter(&thousands)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(draw_err)?;
            for (i, (name, points)) in series.iter().enumerate() {
                let colour = colours[i % colours.len()];
                let xy: Vec<(f64, f64)> = points
                    .iter()
                    .map(|p| (p.0.max(1.0).log10(), if right { p.2 } else { p.1 }))
                    .collect();
                chart
                    .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
                    .map_err(draw_err)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(xy.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
                    .map_err(draw_err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(if right {
                    SeriesLabelPosition::LowerLeft
                } else {
                    SeriesLabelPosition::UpperLeft
                })
                .draw()
                .map_err(draw_err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn png_size(path: &Path) -> (u32, u32, Vec<u8>) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        let info = reader.info();
        (info.width, info.height, buf)
    }

    /// Pixels that are neither white nor the bars' blue: axes, text, dots.
    fn ink(buf: &[u8]) -> usize {
        buf.chunks(3)
            .filter(|p| p != &[255, 255, 255] && p != &[31, 90, 200])
            .count()
    }

    #[test]
    fn each_plot_is_a_png_with_drawing_and_text_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = dir.path().join("sweep.png");
        super::diversity_sweep(&[(1.0, 0.12, 0.5), (0.5, 0.1, 0.6)], &sweep).unwrap();
        let bars = dir.path().join("bars.png");
        let labels = vec![
            ("earn".to_string(), 0.97, 1087),
            ("acq".into(), 0.92, 719),
            ("rare".into(), 0.0, 1),
        ];
        super::label_f1_bars("per-label F1", &labels, &bars).unwrap();
        let hist = dir.path().join("hist.png");
        super::ndcg_histogram("nDCG", &[0.0, 0.3, 1.0, 1.0], &hist).unwrap();
        for p in [&sweep, &bars, &hist] {
            let (w, h, buf) = png_size(p);
            assert_eq!(w, 800);
            assert!(h >= 480);
            // Captions and axis labels rendered from the compiled-in font leave thousands of
            // non-background pixels; an empty canvas leaves none.
            assert!(
                ink(&buf) > 2000,
                "{}: {} inked pixels",
                p.display(),
                ink(&buf)
            );
        }
        let (_, _, bars_buf) = png_size(&bars);
        let blue = bars_buf.chunks(3).filter(|p| p == &[31, 90, 200]).count();
        assert!(blue > 5000, "bars drawn: {blue} blue pixels");
    }
}
