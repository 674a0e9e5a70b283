//! Figures in the manner of the GPT-4 report's Figures 1-3, as SVG (plotters)
//! and PNG (the SVG rasterised by resvg, with the system's fonts when it has any).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::predict::Prediction;
use crate::sweep::RungPoint;
use crate::ScalingError;

const SIZE: (u32, u32) = (900, 600);

/// The series labels of a figure, in its upper-right corner.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, svg: &Path) -> Result<(), ScalingError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| plot_err(svg, e))
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> ScalingError {
    ScalingError::File {
        path: path.to_path_buf(),
        why: format!("cannot draw the figure: {e}"),
    }
}

/// Rasterises `svg` next to it as `.png`.
pub fn svg_to_png(svg: &Path) -> Result<PathBuf, ScalingError> {
    let png = svg.with_extension("png");
    let data = std::fs::read(svg).map_err(|source| ScalingError::Io {
        path: svg.to_path_buf(),
        source,
    })?;
    let mut opt = resvg::usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // plotters writes the generic `sans-serif`, which fontdb maps to Arial unless told
    // otherwise; point it at a sans face this machine has (text is dropped without one).
    let families: Vec<String> = db
        .faces()
        .filter_map(|f| f.families.first().map(|(name, _)| name.clone()))
        .collect();
    if let Some(family) = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"]
        .iter()
        .find(|want| families.iter().any(|f| f == *want))
        .map(|f| f.to_string())
        .or_else(|| families.first().cloned())
    {
        db.set_sans_serif_family(family);
    }
    let tree = resvg::usvg::Tree::from_data(&data, &opt).map_err(|e| plot_err(svg, e))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| plot_err(svg, "empty image"))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.save_png(&png).map_err(|e| plot_err(&png, e))?;
    Ok(png)
}

/// Log-spaced samples from `lo` to `hi`.
fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n).map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp()).collect()
}

/// Figure 1: final validation loss against training compute, the registered
/// fit and its interval at the target, the target's true loss when known.
pub fn loss_figure(svg: &Path, rungs: &[RungPoint], prediction: &Prediction, actual: Option<f64>) -> Result<PathBuf, ScalingError> {
    let fit_names: Vec<&str> = prediction.points.iter().map(|p| p.rung.as_str()).collect();
    let x_lo = rungs.iter().map(|p| p.train_flops).fold(prediction.target_flops, f64::min) / 2.0;
    let x_hi = prediction.target_flops * 3.0;
    let mut ys: Vec<f64> = rungs.iter().map(|p| p.val_bpb).collect();
    ys.extend(prediction.interval90);
    ys.push(prediction.predicted_bpb);
    ys.extend(actual);
    let (y_min, y_max) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = (y_max - y_min).max(1e-3) * 0.08;
    {
        let root = SVGBackend::new(svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(svg, e))?;
        let title = format!(
            "Loss prediction `{}`: fit on runs <= {:.0e} of the target ({:.0}x extrapolation)",
            prediction.name, prediction.max_fraction, prediction.extrapolation
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_min - pad)..(y_max + pad))
            .map_err(|e| plot_err(svg, e))?;
        chart
            .configure_mesh()
            .x_desc("training compute (FLOPs)")
            .y_desc("validation bits per byte")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()
            .map_err(|e| plot_err(svg, e))?;
        let law = prediction.law;
        chart
            .draw_series(LineSeries::new(
                log_grid(x_lo, x_hi, 200).into_iter().map(|c| (c, law.predict(c))),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| plot_err(svg, e))?
            .label(format!("fit {}", law.formula()))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(
                rungs
                    .iter()
                    .filter(|p| fit_names.contains(&p.name.as_str()))
                    .map(|p| Circle::new((p.train_flops, p.val_bpb), 5, BLACK.filled())),
            )
            .map_err(|e| plot_err(svg, e))?
            .label("fit runs")
            .legend(|(x, y)| Circle::new((x + 9, y), 5, BLACK.filled()));
        chart
            .draw_series(
                rungs
                    .iter()
                    .filter(|p| !fit_names.contains(&p.name.as_str()))
                    .map(|p| Circle::new((p.train_flops, p.val_bpb), 5, BLACK.stroke_width(1))),
            )
            .map_err(|e| plot_err(svg, e))?
            .label("other runs (not fitted)")
            .legend(|(x, y)| Circle::new((x + 9, y), 5, BLACK.stroke_width(1)));
        let t = prediction.target_flops;
        let [lo, hi] = prediction.interval90;
        chart
            .draw_series([PathElement::new([(t, lo), (t, hi)], RED.stroke_width(3))])
            .map_err(|e| plot_err(svg, e))?
            .label(format!("90% interval [{lo:.4}, {hi:.4}]"))
            .legend(|(x, y)| PathElement::new([(x + 9, y - 6), (x + 9, y + 6)], RED.stroke_width(3)));
        chart
            .draw_series([Cross::new((t, prediction.predicted_bpb), 7, RED.stroke_width(2))])
            .map_err(|e| plot_err(svg, e))?
            .label(format!("predicted {:.4}", prediction.predicted_bpb))
            .legend(|(x, y)| Cross::new((x + 9, y), 6, RED.stroke_width(2)));
        if let Some(a) = actual {
            chart
                .draw_series([TriangleMarker::new((t, a), 8, GREEN.filled())])
                .map_err(|e| plot_err(svg, e))?
                .label(format!("target, actual {a:.4}"))
                .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, GREEN.filled()));
        }
        draw_legend(&mut chart, svg)?;
        root.present().map_err(|e| plot_err(svg, e))?;
    }
    svg_to_png(svg)
}

/// A series of `(compute, value)` points with an optional fitted curve.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub curve: Vec<(f64, f64)>,
    /// Held-out point(s), drawn as triangles.
    pub held_out: Vec<(f64, f64)>,
}

/// A generic log-x figure: capability (Figure 2) and the probe (Figure 3).
pub fn series_figure(
    svg: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
) -> Result<PathBuf, ScalingError> {
    let all = || series.iter().flat_map(|s| s.points.iter().chain(&s.curve).chain(&s.held_out));
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all() {
        if x.is_finite() && y.is_finite() && x > 0.0 {
            (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
        }
    }
    if let Some((y, _)) = hline {
        (y_lo, y_hi) = (y_lo.min(y), y_hi.max(y));
    }
    if !x_lo.is_finite() {
        return Err(plot_err(svg, "no finite points"));
    }
    let pad = (y_hi - y_lo).max(1e-3) * 0.08;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    {
        let root = SVGBackend::new(svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(svg, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d((x_lo / 2.0..x_hi * 2.0).log_scale(), (y_lo - pad)..(y_hi + pad))
            .map_err(|e| plot_err(svg, e))?;
        chart
            .configure_mesh()
            .x_desc("training compute (FLOPs)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()
            .map_err(|e| plot_err(svg, e))?;
        for (i, s) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            if !s.curve.is_empty() {
                chart
                    .draw_series(LineSeries::new(s.curve.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| plot_err(svg, e))?;
            }
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(|e| plot_err(svg, e))?
                .label(s.label.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
            chart
                .draw_series(s.held_out.iter().map(|&p| TriangleMarker::new(p, 8, color.filled())))
                .map_err(|e| plot_err(svg, e))?;
        }
        if let Some((y, label)) = hline {
            chart
                .draw_series([PathElement::new([(x_lo / 2.0, y), (x_hi * 2.0, y)], BLACK.mix(0.6).stroke_width(1))])
                .map_err(|e| plot_err(svg, e))?
                .label(label.to_string())
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.6)));
        }
        draw_legend(&mut chart, svg)?;
        root.present().map_err(|e| plot_err(svg, e))?;
    }
    svg_to_png(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_grid_spans_the_range() {
        let g = log_grid(1e9, 1e13, 5);
        assert_eq!(g.len(), 5);
        assert!((g[0] - 1e9).abs() < 1.0 && (g[4] / 1e13 - 1.0).abs() < 1e-12);
        assert!((g[2] / 1e11 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_series_figure_is_written_as_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("f.svg");
        let s = Series {
            label: "bucket 1".into(),
            points: vec![(1e9, 2.0), (1e10, 1.5)],
            curve: vec![(1e9, 2.0), (1e11, 1.0)],
            held_out: vec![(1e11, 1.1)],
        };
        let png = series_figure(&svg, "t", "y", &[s], Some((0.5, "chance"))).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
        assert_eq!(&std::fs::read(png).unwrap()[1..4], b"PNG");
    }
}
