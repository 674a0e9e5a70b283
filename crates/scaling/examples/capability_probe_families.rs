//! Investigation: pass rates per task family of saved models, with a few sample completions.
//! `cargo run --release -p ferrogpt-scaling --example capability_probe_families -- MODEL_DIR EASY TASKS SAMPLES TEMP [SHOW]`
use ferrogpt_data::code_task::{check_completion, tiered_heldout_tasks};
use ferrogpt_infer::LocalModel;
use ferrogpt_scaling::capability::sample_completions;
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        return Err("usage: MODEL_DIR EASY TASKS SAMPLES TEMP [SHOW]".into());
    }
    let model = LocalModel::load(std::path::Path::new(&args[1]))?;
    let (easy, n, samples): (usize, usize, usize) = (args[2].parse()?, args[3].parse()?, args[4].parse()?);
    let temp: f32 = args[5].parse()?;
    let show: usize = args.get(6).map_or(Ok(0), |s| s.parse())?;
    let tasks = tiered_heldout_tasks(0, easy, n);
    let t = std::time::Instant::now();
    let comps = sample_completions(&model, &tasks, samples, temp, 0)?;
    let secs = t.elapsed().as_secs_f64();
    // family -> (tasks, solved at least once, sum of pass rates)
    let mut fam: BTreeMap<String, (usize, usize, f64)> = BTreeMap::new();
    for (i, (task, cs)) in tasks.iter().zip(&comps).enumerate() {
        let p = cs.iter().filter(|c| check_completion(task, c)).count();
        let tier = if i < easy { "easy:" } else { "" };
        let e = fam.entry(format!("{tier}{}", task.family)).or_default();
        e.0 += 1;
        e.1 += usize::from(p > 0);
        e.2 += p as f64 / samples as f64;
    }
    println!("{} tasks x {samples} samples at T={temp}: {secs:.1}s", tasks.len());
    for (f, (k, solved, rate)) in &fam {
        println!("{f:>16}: {k:3} tasks, {solved:3} solved once, mean pass {:.4}", rate / *k as f64);
    }
    for (task, cs) in tasks.iter().zip(&comps).take(show) {
        println!(
            "--- {} [{}] ref {:?}\n{:?}",
            task.id,
            task.family,
            task.reference,
            task.model_input()
        );
        for c in cs.iter().take(6) {
            println!("   {c:?} pass={}", check_completion(task, c));
        }
    }
    Ok(())
}
