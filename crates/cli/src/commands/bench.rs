//! `ferrogpt bench train | generate`: engine throughput on the reference shape
//! (vocab 4096, ctx 256, d 256, 4 layers, 4 heads, SwiGLU 688, untied head).
//! `bench/train_vs_pytorch.sh` runs these next to PyTorch and prints ratios.

use ferrogpt_engine::bench::{bench_decode, bench_train, measure_sgemm_gflops, median};
use ferrogpt_engine::ModelConfig;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Forward + backward + AdamW steps on the reference model, batch 16 x 256
    Train {
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Print one JSON line instead of prose (for scripts)
        #[arg(long)]
        json: bool,
    },
    /// Batch-1 decoding with the KV cache on the reference model
    Generate {
        #[arg(long, default_value_t = 255)]
        tokens: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let cfg = ModelConfig::reference();
    let threads = rayon::current_num_threads();
    match cmd {
        BenchCommand::Train {
            batch,
            warmup,
            steps,
            json,
        } => {
            let peak = measure_sgemm_gflops(1024, 5);
            let r = bench_train(&cfg, batch, cfg.max_seq_len, warmup, steps)?;
            let (tps, gflops) = (r.tokens_per_second(), r.model_gflops());
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tokens_per_s": tps, "step_s": r.median_step(), "gflops": gflops,
                        "executed_gflops": r.executed_flops_per_step / r.median_step() / 1e9,
                        "sgemm_peak_gflops": peak, "threads": threads, "params": r.params})
                );
            } else {
                println!(
                    "ferrogpt train step, reference model ({} params), batch {batch} x {}, {threads} threads",
                    r.params, cfg.max_seq_len
                );
                println!(
                    "  median step      {:.3} s over {steps} steps (after {warmup} warm-up)",
                    r.median_step()
                );
                println!("  tokens/s         {tps:.0}");
                println!("  model GFLOP/s    {gflops:.1}  (all matmul FLOPs incl. attention and LM head)");
                println!(
                    "  executed GFLOP/s {:.1}  (incl. flash-attention recomputation)",
                    r.executed_flops_per_step / r.median_step() / 1e9
                );
                println!(
                    "  sgemm ceiling    {peak:.1} GFLOP/s measured  ->  {:.0}% of it",
                    100.0 * gflops / peak
                );
            }
        }
        BenchCommand::Generate { tokens, runs, json } => {
            let r = bench_decode(&cfg, tokens, runs)?;
            let med = median(&r);
            if json {
                println!("{}", serde_json::json!({"tokens_per_s": med, "runs": r, "threads": threads}));
            } else {
                println!("ferrogpt decode, reference model, batch 1, {tokens} tokens, {threads} threads");
                println!(
                    "  tokens/s  {med:.0} (median of {runs}; runs {:?})",
                    r.iter().map(|v| v.round()).collect::<Vec<_>>()
                );
            }
        }
    }
    Ok(())
}
