//! Throughput measurements of the engine itself: a training step of a given
//! shape, batch-1 decoding with the KV cache, and the machine's sgemm ceiling
//! (the denominator of MFU). Benchmarks report figures; they assert nothing.

use crate::kv::{LogitsFor, SeqChunk};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::{Activations, AttnMask, DType, Input, KvCache, Model, ModelConfig};
use std::time::Instant;

/// Best GFLOP/s of a square f32 matmul of side `n` over a few repetitions,
/// on the current rayon pool.
pub fn measure_sgemm_gflops(n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; n * n];
    crate::matmul::linear_forward(&mut c, &a, &b, n, n, n, false);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        crate::matmul::linear_forward(&mut c, &a, &b, n, n, n, false);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

#[derive(Clone, Debug)]
pub struct TrainBench {
    pub step_seconds: Vec<f64>,
    pub tokens_per_step: usize,
    pub model_flops_per_step: f64,
    pub executed_flops_per_step: f64,
    pub params: usize,
}

impl TrainBench {
    pub fn median_step(&self) -> f64 {
        median(&self.step_seconds)
    }
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens_per_step as f64 / self.median_step()
    }
    pub fn model_gflops(&self) -> f64 {
        self.model_flops_per_step / self.median_step() / 1e9
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

/// Forward + backward + clip + AdamW on random tokens, `warmup` untimed steps
/// then `steps` timed ones.
pub fn bench_train(cfg: &ModelConfig, batch: usize, seq: usize, warmup: usize, steps: usize) -> Result<TrainBench, crate::EngineError> {
    let mut model = Model::<f32>::new(cfg.clone(), 0.02, 1)?;
    model.enable_grads();
    let mut acts = Activations::new(cfg, batch, seq)?;
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
    let mut rng = ferrogpt_rng::Xoshiro256StarStar::new(2);
    let mask = AttnMask::causal(seq);
    let mut step_seconds = Vec::new();
    let mut executed = 0u64;
    for i in 0..warmup + steps {
        let toks: Vec<u32> = (0..batch * (seq + 1)).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
        let (inputs, targets): (Vec<u32>, Vec<u32>) = toks
            .chunks_exact(seq + 1)
            .flat_map(|row| row[..seq].iter().copied().zip(row[1..].iter().copied()).collect::<Vec<_>>())
            .unzip();
        let flops_before = crate::matmul::flops_executed();
        let t = Instant::now();
        model.zero_grad();
        model.forward_backward(&mut acts, Input::Tokens(&inputs), &targets, &mask, 1.0)?;
        clip_grad_norm(&mut model.grads, 1.0);
        let (params, grads) = (&mut model.params, &model.grads);
        opt.update(params, grads, 1e-3);
        let dt = t.elapsed().as_secs_f64();
        if i >= warmup {
            step_seconds.push(dt);
            executed = crate::matmul::flops_executed() - flops_before;
        }
    }
    Ok(TrainBench {
        step_seconds,
        tokens_per_step: batch * seq,
        model_flops_per_step: cfg.train_flops_per_token(seq) * (batch * seq) as f64,
        executed_flops_per_step: executed as f64,
        params: model.num_params(),
    })
}

/// What [`bench_decode`] decodes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Storage of the weights ([`Model::quantize`]).
    pub weights: DType,
    /// Storage of the KV cache ([`KvCache::with_dtype`]).
    pub kv: DType,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            weights: DType::F32,
            kv: DType::F32,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DecodeBench {
    /// Tokens/s of each timed run.
    pub tokens_per_s: Vec<f64>,
    /// What the model's weights occupy.
    pub weight_bytes: usize,
    /// What a decode step reads on average: every weight but the embedding
    /// table (one row of it), plus the KV cache up to the mean position.
    pub bytes_per_step: f64,
    pub kv_bytes_per_token: usize,
    pub weights: DType,
    pub kv: DType,
}

/// Batch-1 greedy decoding with the KV cache: one prompt token, then
/// `tokens` decode steps; tokens/s of each of `runs` runs after a warm-up run.
pub fn bench_decode(cfg: &ModelConfig, tokens: usize, runs: usize, opts: DecodeOptions) -> Result<DecodeBench, crate::EngineError> {
    let mut model = Model::<f32>::new(cfg.clone(), 0.02, 1)?;
    model.quantize(opts.weights)?;
    let mut cache = KvCache::<f32>::with_dtype(cfg, 1, tokens + 1, opts.kv)?;
    let mut logits = Vec::new();
    let mut tokens_per_s = Vec::new();
    for run in 0..runs + 1 {
        cache.reset(0);
        let mut tok = 0u32;
        let t = Instant::now();
        for _ in 0..tokens {
            model.forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &[tok] }], LogitsFor::Last, &mut logits)?;
            tok = argmax(&logits) as u32;
        }
        // The first run warms caches and the thread pool.
        if run > 0 {
            tokens_per_s.push(tokens as f64 / t.elapsed().as_secs_f64());
        }
    }
    let embed_name = "model.embed_tokens.weight";
    let streamed: usize = model
        .tensor_weights()
        .iter()
        .map(|(spec, w)| {
            let bytes = w.bytes();
            if spec.name == embed_name && !cfg.tie_embeddings {
                bytes / cfg.vocab_size
            } else {
                bytes
            }
        })
        .sum();
    let mean_position = tokens as f64 / 2.0;
    Ok(DecodeBench {
        tokens_per_s,
        weight_bytes: model.weight_bytes(),
        bytes_per_step: streamed as f64 + cache.bytes_per_token() as f64 * mean_position,
        kv_bytes_per_token: cache.bytes_per_token(),
        weights: model.weight_dtype(),
        kv: cache.dtype(),
    })
}

/// Read bandwidth in GB/s of the rayon pool streaming a buffer of `bytes`
/// (each worker its share, `reps` times, best of 5): the roof of a decode
/// step, which streams its weights once. A buffer the size of the weights
/// measures the level of the memory hierarchy they live in.
pub fn measure_read_gbps(bytes: usize, reps: usize) -> f64 {
    let kernels = crate::simd::Kernels::active();
    let buf = crate::huge::filled_huge(bytes / 4, 1.0f32);
    let workers = rayon::current_num_threads();
    let share = buf.len() / workers;
    let mut best = f64::INFINITY;
    let mut checksum = 0.0f32;
    for _ in 0..5 {
        let t = Instant::now();
        let sums = rayon::broadcast(|ctx| {
            let part = &buf[ctx.index() * share..(ctx.index() + 1) * share];
            // `black_box` keeps the compiler from summing the (unchanged) buffer once for all reps.
            (0..reps.max(1))
                .map(|_| sum_lanes(kernels, std::hint::black_box(part)))
                .sum::<f32>()
        });
        best = best.min(t.elapsed().as_secs_f64());
        checksum += sums.iter().sum::<f32>();
    }
    std::hint::black_box(checksum);
    (share * workers * 4 * reps.max(1)) as f64 / best / 1e9
}

crate::simd::multiversion! {
    /// Sum in 32 independent lanes: as many loads in flight as the core allows.
    fn sum_lanes<T: crate::Float>(isa: Isa, v: &[T]) -> T {
        let (chunks, tail) = v.as_chunks::<32>();
        let mut acc = [T::ZERO; 32];
        for c in chunks {
            for i in 0..32 {
                acc[i] += c[i];
            }
        }
        tail.iter().fold(acc.iter().fold(T::ZERO, |s, &a| s + a), |s, &a| s + a)
    }
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
