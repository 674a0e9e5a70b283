//! Experiment: GPT-4-style capability prediction on an existing ladder's saved models.
//! Measures (or reuses) pass rates of every run under `RUNS_DIR` with at most `MAX_FLOPS`
//! training FLOPs and of `TARGET_DIR`, fits per-bucket power laws on the former and prints
//! predicted vs measured pass rates of the target.
//! `capability_experiment RUNS_DIR TARGET_RUN_DIR MAX_FLOPS CACHE_DIR EASY TASKS SAMPLES TARGET_SAMPLES TEMP BUCKETS`
use ferrogpt_data::code_task::tiered_heldout_tasks;
use ferrogpt_infer::LocalModel;
use ferrogpt_scaling::capability::{fit_capability, measure_pass_rates, PassRates};
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn flops(run: &Path) -> Res<f64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("result.json"))?)?;
    v["train_flops"]
        .as_f64()
        .ok_or_else(|| format!("{}: no train_flops", run.display()).into())
}

fn measure(run: &Path, cache: &Path, tasks: &[ferrogpt_data::code_task::CodeTask], samples: usize, temp: f32) -> Res<PassRates> {
    let name = run
        .strip_prefix(run.parent().and_then(Path::parent).unwrap_or(run))?
        .to_string_lossy()
        .replace('/', "_");
    let file = cache.join(format!("{name}-{samples}.json"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Ok(serde_json::from_str(&text)?);
    }
    let t = std::time::Instant::now();
    let model = LocalModel::load(&run.join("model"))?;
    let r = measure_pass_rates(&model, tasks, samples, temp, 0)?;
    let cpu = t.elapsed().as_secs_f64();
    let solved = r.passes.iter().filter(|&&p| p > 0).count();
    println!(
        "{name}: {solved}/{} solved once, mean pass {:.4}, {cpu:.1}s",
        r.passes.len(),
        r.mean_pass_rate()
    );
    std::fs::write(&file, serde_json::to_string(&r)?)?;
    Ok(r)
}

fn main() -> Res<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 11 {
        return Err("usage: RUNS_DIR TARGET_RUN_DIR MAX_FLOPS CACHE_DIR EASY TASKS SAMPLES TARGET_SAMPLES TEMP BUCKETS".into());
    }
    let (runs_dir, target, cache) = (PathBuf::from(&a[1]), PathBuf::from(&a[2]), PathBuf::from(&a[4]));
    let max_flops: f64 = a[3].parse()?;
    let (easy, count, samples, target_samples): (usize, usize, usize, usize) = (a[5].parse()?, a[6].parse()?, a[7].parse()?, a[8].parse()?);
    let (temp, buckets): (f32, usize) = (a[9].parse()?, a[10].parse()?);
    std::fs::create_dir_all(&cache)?;
    let tasks = tiered_heldout_tasks(0, easy, count);
    let mut runs: Vec<(f64, PathBuf)> = Vec::new();
    for rung in std::fs::read_dir(&runs_dir)? {
        for seed in std::fs::read_dir(rung?.path())? {
            let p = seed?.path();
            if p.join("model").exists() && p.join("result.json").exists() {
                runs.push((flops(&p)?, p));
            }
        }
    }
    runs.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let mut points = Vec::new();
    for (c, run) in runs.iter().filter(|r| r.0 <= max_flops) {
        points.push((*c, measure(run, &cache, &tasks, samples, temp)?));
    }
    let kept: Vec<usize> = (0..tasks.len()).filter(|&t| points.iter().all(|(_, r)| r.passes[t] > 0)).collect();
    println!(
        "kept (solved by every fitted run): {:?}",
        kept.iter()
            .map(|&t| format!("{}[{}]", tasks[t].id, tasks[t].family))
            .collect::<Vec<_>>()
    );
    let fit = match fit_capability(&points, buckets) {
        Ok(f) => f,
        Err(e) => {
            println!("no fit: {e}");
            return Ok(());
        }
    };
    for b in fit.buckets.iter().chain([&fit.aggregate]) {
        println!(
            "bucket {:?}: {} tasks, alpha {:.4} k {:.4}, points {:?}",
            b.bucket,
            b.task_ids.len(),
            b.law.alpha,
            b.law.k,
            b.points
        );
    }
    let tc = flops(&target)?;
    let truth = measure(&target, &cache, &tasks, target_samples, temp)?;
    let v = fit.verify(tc, &truth);
    for b in v.buckets.iter().chain([&v.aggregate]) {
        println!(
            "bucket {:?} ({} tasks): predicted E[log p] {:.3} (p {:.4}, 90% [{:.3}, {:.3}]) actual {:.3} (p {:.4}) inside {}",
            b.bucket,
            b.tasks,
            b.predicted_mean_log_pass_rate,
            b.predicted_pass_rate,
            b.interval90.0,
            b.interval90.1,
            b.actual_mean_log_pass_rate,
            b.actual_pass_rate,
            b.inside_interval
        );
    }
    println!(
        "relative error (aggregate -E[log p]) {:.3}, mean abs error {:.3}",
        v.relative_error, v.mean_abs_error
    );
    Ok(())
}
