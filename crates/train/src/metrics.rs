//! The metrics JSONL (one line per optimizer step, one per validation) and the
//! loss-curve SVG drawn from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{io_err, TrainError};

/// One line of `metrics.jsonl`. Step lines carry the training fields, validation
/// lines the `val_*` fields; absent fields are omitted from the JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
    /// A post-training stage's own figures (`accuracy`, `reward`, `kl`...), as top-level keys.
    #[serde(flatten)]
    pub figures: std::collections::BTreeMap<String, f64>,
}

/// Appends records to a JSONL file, one flushed line each, so a killed run
/// leaves every completed step on disk.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending. With `keep_through = Some(step)` the lines of
    /// later steps (written by a run that went past its last checkpoint) are
    /// dropped first, so a resumed run's file reads like an uninterrupted one's.
    /// With `None` the file starts empty.
    pub fn open(path: &Path, keep_through: Option<u64>) -> Result<MetricsLog, TrainError> {
        let kept = match keep_through {
            Some(step) if path.exists() => read_records(path)?.into_iter().filter(|r| r.step <= step).collect(),
            _ => Vec::new(),
        };
        let mut text = String::new();
        for r in &kept {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        std::fs::write(path, text).map_err(io_err(path))?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(io_err(path))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, r: &Record) -> Result<(), TrainError> {
        let mut line = serde_json::to_string(r).unwrap_or_default();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io_err(&self.path))
    }
}

/// Every record of a metrics file; a torn last line (a kill mid-write) is skipped.
pub fn read_records(path: &Path) -> Result<Vec<Record>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => {
                return Err(TrainError::Parse {
                    path: path.to_path_buf(),
                    why: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// Draws training loss per step and validation loss (both nats/token) to an SVG.
pub fn plot_loss_curve(records: &[Record], path: &Path, title: &str) -> Result<(), TrainError> {
    let plot_err = |e: String| TrainError::Plot {
        path: path.to_path_buf(),
        why: e,
    };
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.loss.map(|l| (r.step as f64, l)))
        .filter(|(_, l)| l.is_finite())
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.val_loss.map(|l| (r.step as f64, l)))
        .filter(|(_, l)| l.is_finite())
        .collect();
    if train.is_empty() {
        return Err(plot_err("no training steps to plot".into()));
    }
    let x_max = train.iter().chain(&val).map(|p| p.0).fold(1.0, f64::max);
    let ys = || train.iter().chain(&val).map(|p| p.1);
    let (y_min, y_max) = (ys().fold(f64::INFINITY, f64::min), ys().fold(f64::NEG_INFINITY, f64::max));
    let pad = ((y_max - y_min) * 0.05).max(1e-3);

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, (y_min - pad).max(0.0)..y_max + pad)
        .map_err(|e| plot_err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (nats/token)")
        .draw()
        .map_err(|e| plot_err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(1)))
        .map_err(|e| plot_err(e.to_string()))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
            .map_err(|e| plot_err(e.to_string()))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(val.into_iter().map(|p| Circle::new(p, 3, RED.filled())))
            .map_err(|e| plot_err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| plot_err(e.to_string()))?;
    root.present().map_err(|e| plot_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, loss: f64) -> Record {
        Record {
            step,
            loss: Some(loss),
            ..Record::default()
        }
    }

    #[test]
    fn reopening_drops_steps_past_the_checkpoint_and_a_torn_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&p, None).unwrap();
        for s in 1..=6 {
            log.write(&step(s, 1.0 / s as f64)).unwrap();
        }
        drop(log);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"step\": 7, \"lo");
        std::fs::write(&p, text).unwrap();
        assert_eq!(read_records(&p).unwrap().len(), 6);
        let mut log = MetricsLog::open(&p, Some(4)).unwrap();
        log.write(&step(5, 0.5)).unwrap();
        let steps: Vec<u64> = read_records(&p).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5]);
        assert_eq!(read_records(&p).unwrap()[1].loss, Some(0.5));
    }

    #[test]
    fn loss_curve_is_an_svg_with_both_series() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("loss.svg");
        let mut recs: Vec<Record> = (1..=20).map(|s| step(s, 5.0 / s as f64)).collect();
        recs.push(Record {
            step: 20,
            val_loss: Some(0.4),
            val_bpb: Some(0.1),
            ..Record::default()
        });
        plot_loss_curve(&recs, &p, "test").unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("validation") && svg.contains("train"));
        assert!(plot_loss_curve(&[], &p, "empty").is_err());
    }
}
