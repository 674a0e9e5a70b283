//! `ferrogpt bench train | generate`: engine throughput on the reference shape
//! (vocab 4096, ctx 256, d 256, 4 layers, 4 heads, SwiGLU 688, untied head).
//! `bench/train_vs_pytorch.sh` runs these next to PyTorch and prints ratios.

use ferrogpt_engine::bench::{bench_decode, bench_train, measure_read_gbps, measure_sgemm_gflops, median, DecodeOptions};
use ferrogpt_engine::{KernelPath, Kernels, ModelConfig};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Forward + backward + AdamW steps on the reference model, batch 16 x 256
    Train {
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Kernel path: auto (the best this CPU has), portable, avx2, avx512
        #[arg(long, default_value = "auto")]
        kernels: String,
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
        /// Weight storage: f32, f16 or q8_0
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// KV cache storage: f32 or f16
        #[arg(long, default_value = "f32")]
        kv_dtype: String,
        /// Kernel path: auto (the best this CPU has), portable, avx2, avx512
        #[arg(long, default_value = "auto")]
        kernels: String,
        #[arg(long)]
        json: bool,
    },
}

/// `auto` keeps the engine's choice (`FERROGPT_KERNELS` or the best path);
/// a path name forces it.
fn choose_kernels(name: &str) -> anyhow::Result<KernelPath> {
    let path = if name.eq_ignore_ascii_case("auto") {
        Kernels::from_env()?.path()
    } else {
        name.parse()?
    };
    Ok(Kernels::force(path)?.path())
}

/// The CPU's model name (`/proc/cpuinfo` on Linux, else the architecture),
/// so figures say what they were measured on.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(key, _)| key.trim() == "model name")
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let cfg = ModelConfig::reference();
    let threads = rayon::current_num_threads();
    let cpu = cpu_model();
    // What this CPU could run, besides the path chosen (printed as `kernels`).
    let supported = KernelPath::supported().iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
    match cmd {
        BenchCommand::Train {
            batch,
            kernels,
            warmup,
            steps,
            json,
        } => {
            let kernels = choose_kernels(&kernels)?;
            let peak = measure_sgemm_gflops(1024, 5);
            let r = bench_train(&cfg, batch, cfg.max_seq_len, warmup, steps)?;
            let (tps, gflops) = (r.tokens_per_second(), r.model_gflops());
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tokens_per_s": tps, "step_s": r.median_step(), "gflops": gflops,
                        "executed_gflops": r.executed_flops_per_step / r.median_step() / 1e9,
                        "sgemm_peak_gflops": peak, "threads": threads, "params": r.params, "kernels": kernels.name(), "supported_kernels": supported, "cpu": cpu})
                );
            } else {
                println!(
                    "ferrogpt train step, reference model ({} params), batch {batch} x {}, {threads} threads, {cpu}, kernels {kernels} (supported: {supported})",
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
        BenchCommand::Generate {
            tokens,
            runs,
            dtype,
            kv_dtype,
            kernels,
            json,
        } => {
            let kernels = choose_kernels(&kernels)?;
            let opts = DecodeOptions {
                weights: dtype.parse()?,
                kv: kv_dtype.parse()?,
            };
            let r = bench_decode(&cfg, tokens, runs, opts)?;
            let med = median(&r.tokens_per_s);
            // The roof: the bytes a step streams at the measured read bandwidth
            // of a buffer as large as the weights (so from the same cache level).
            let gbps = measure_read_gbps(r.weight_bytes, 20);
            let roof = gbps * 1e9 / r.bytes_per_step;
            let mb = |b: f64| b / 1e6;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tokens_per_s": med, "runs": r.tokens_per_s, "threads": threads,
                        "cpu": cpu, "kernels": kernels.name(), "supported_kernels": supported, "dtype": r.weights.name(), "kv_dtype": r.kv.name(),
                        "weight_bytes": r.weight_bytes, "kv_bytes_per_token": r.kv_bytes_per_token,
                        "bytes_per_step": r.bytes_per_step, "read_gbps": gbps, "roofline_tokens_per_s": roof})
                );
            } else {
                println!("ferrogpt decode, reference model, batch 1, {tokens} tokens, {threads} threads, {cpu}, kernels {kernels} (supported: {supported})");
                println!("  weights   {}, {:.2} MB", r.weights, mb(r.weight_bytes as f64));
                println!("  KV cache  {}, {} bytes per token", r.kv, r.kv_bytes_per_token);
                println!(
                    "  tokens/s  {med:.0} (median of {runs}; runs {:?})",
                    r.tokens_per_s.iter().map(|v| v.round()).collect::<Vec<_>>()
                );
                println!(
                    "  roofline  {:.2} MB read per step at {gbps:.1} GB/s (measured, {threads} threads) -> {roof:.0} tokens/s; this is {:.0}% of it",
                    mb(r.bytes_per_step),
                    100.0 * med / roof
                );
            }
        }
    }
    Ok(())
}
