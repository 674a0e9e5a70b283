//! Whole-model checks: gradients against finite differences in f64 (tokens
//! and embedding input, GQA, tied head, a bidirectional span), the KV-cache
//! path against the training forward, and determinism.

mod common;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::{Activations, AttnMask, Input, KvCache, Model, ModelConfig, IGNORE};

fn tiny(tie: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 23,
        d_model: 16,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden: 12,
        max_seq_len: 80,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tie_embeddings: tie,
        num_labels: None,
    }
}

fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + salt * 13 + i * i) % vocab) as u32).collect()
}

#[test]
fn full_model_gradients_match_finite_differences_in_f64() {
    for tie in [false, true] {
        let cfg = tiny(tie);
        let (batch, seq) = (2, 70); // seq > one attention block
        let mut model = Model::<f64>::new(cfg.clone(), 0.3, 5).unwrap();
        let mut acts = Activations::new(&cfg, batch, seq).unwrap();
        let toks = tokens(batch * seq, cfg.vocab_size, 1);
        let mut targets = tokens(batch * seq, cfg.vocab_size, 2);
        targets[5] = IGNORE;
        let mask = AttnMask::causal_with_bidirectional_spans(seq, &[(20, 30)]).unwrap();
        model
            .forward_backward(&mut acts, Input::Tokens(&toks), &targets, &mask, 1.0)
            .unwrap();
        let grads = model.grads.clone();
        let h = 1e-6;
        // A spread of parameters from every tensor.
        let specs = model.layout.tensors.clone();
        for spec in &specs {
            for k in [0, spec.len() / 3, spec.len() - 1] {
                let i = spec.offset + k;
                let orig = model.params[i];
                model.params[i] = orig + h;
                let up = model.forward_loss(&mut acts, Input::Tokens(&toks), &targets, &mask).unwrap();
                model.params[i] = orig - h;
                let down = model.forward_loss(&mut acts, Input::Tokens(&toks), &targets, &mask).unwrap();
                model.params[i] = orig;
                let numeric = (up - down) / (2.0 * h);
                let tol = 1e-6 * (1.0 + numeric.abs());
                assert!(
                    (grads[i] - numeric).abs() < tol,
                    "tie={tie} {}[{k}]: analytic {} vs numeric {numeric}",
                    spec.name,
                    grads[i]
                );
            }
        }
    }
}

/// A reward model (one-output score head started from a language model)
/// under the pairwise loss through `backward_from_logits`, two sequences
/// packed in one row (each sees only itself), against finite differences.
#[test]
fn score_head_pairwise_gradients_match_finite_differences() {
    use ferrogpt_engine::kernels::post_training::pairwise_loss;
    let lm = Model::<f64>::new(tiny(true), 0.3, 8).unwrap();
    let mut model = Model::classifier_from(&lm, 1, 0.3, 9).unwrap();
    assert_eq!(model.cfg.num_labels, Some(1));
    assert!(model.layout.find("score.weight").is_some() && model.layout.find("lm_head.weight").is_none());
    let embed = model.layout.find("model.embed_tokens.weight").unwrap().range();
    assert_eq!(&model.params[embed.clone()], &lm.params[embed]);

    let cfg = model.cfg.clone();
    let seq = 12;
    let mut acts = Activations::new(&cfg, 1, seq).unwrap();
    let toks = tokens(seq, cfg.vocab_size, 4);
    let windows = (0..seq as u32).map(|i| if i < 5 { [0, i + 1] } else { [5, i + 1] }).collect();
    let mask = AttnMask::from_windows(seq, windows).unwrap();
    // The chosen response ends at position 4, the rejected one at 11.
    let (chosen_end, rejected_end) = (4, 11);
    let loss = |model: &Model<f64>, acts: &mut Activations<f64>| {
        model.forward_logits(acts, Input::Tokens(&toks), &mask).unwrap();
        pairwise_loss(acts.logits[chosen_end], acts.logits[rejected_end])
    };
    let (_, d_chosen) = loss(&model, &mut acts);
    acts.logits.fill(0.0);
    acts.logits[chosen_end] = d_chosen;
    acts.logits[rejected_end] = -d_chosen;
    model.zero_grad();
    model.backward_from_logits(&mut acts, &mask).unwrap();
    let grads = model.grads.clone();
    let h = 1e-6;
    for spec in model.layout.tensors.clone() {
        for k in [0, spec.len() / 2, spec.len() - 1] {
            let i = spec.offset + k;
            let orig = model.params[i];
            model.params[i] = orig + h;
            let up = loss(&model, &mut acts).0;
            model.params[i] = orig - h;
            let down = loss(&model, &mut acts).0;
            model.params[i] = orig;
            let numeric = (up - down) / (2.0 * h);
            assert!(
                (grads[i] - numeric).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{}[{k}]: analytic {} vs numeric {numeric}",
                spec.name,
                grads[i]
            );
        }
    }
}

#[test]
fn embedding_input_gradient_matches_finite_differences() {
    let cfg = tiny(false);
    let (batch, seq) = (1, 9);
    let mut model = Model::<f64>::new(cfg.clone(), 0.3, 6).unwrap();
    let mut acts = Activations::new(&cfg, batch, seq).unwrap();
    let mut emb: Vec<f64> = (0..seq * cfg.d_model).map(|i| ((i as f64) * 0.37).sin()).collect();
    let targets = tokens(seq, cfg.vocab_size, 3);
    let mask = AttnMask::causal(seq);
    model
        .forward_backward(&mut acts, Input::Embeddings(&emb), &targets, &mask, 1.0)
        .unwrap();
    let d_input = acts.d_input.clone();
    for i in (0..emb.len()).step_by(11) {
        let orig = emb[i];
        emb[i] = orig + 1e-6;
        let up = model.forward_loss(&mut acts, Input::Embeddings(&emb), &targets, &mask).unwrap();
        emb[i] = orig - 1e-6;
        let down = model.forward_loss(&mut acts, Input::Embeddings(&emb), &targets, &mask).unwrap();
        emb[i] = orig;
        let numeric = (up - down) / 2e-6;
        assert!(
            (d_input[i] - numeric).abs() < 1e-6 * (1.0 + numeric.abs()),
            "d_input[{i}] {} vs {numeric}",
            d_input[i]
        );
    }
}

#[test]
fn kv_cache_matches_the_full_forward_for_mixed_prefill_and_decode() {
    let cfg = tiny(false);
    let model = Model::<f64>::new(cfg.clone(), 0.3, 7).unwrap();
    let seq = 40;
    let a = tokens(seq, cfg.vocab_size, 4);
    let b = tokens(seq, cfg.vocab_size, 5);
    let mut acts = Activations::new(&cfg, 2, seq).unwrap();
    let both: Vec<u32> = a.iter().chain(&b).copied().collect();
    model
        .forward_logits(&mut acts, Input::Tokens(&both), &AttnMask::causal(seq))
        .unwrap();
    let v = cfg.vocab_size;
    let full = acts.logits.clone();

    let mut cache = KvCache::<f64>::new(&cfg, 3, 64);
    let mut logits = Vec::new();
    // Slot 2 gets sequence a as one prefill with every position's logits.
    model
        .forward_cached(&mut cache, &[SeqChunk { slot: 2, tokens: &a }], LogitsFor::All, &mut logits)
        .unwrap();
    for (i, (x, y)) in logits.iter().zip(&full[..seq * v]).enumerate() {
        assert!((x - y).abs() < 1e-9, "prefill logit {i}: {x} vs {y}");
    }
    // Slot 0 gets b in a prefill of 25 then decode steps, batched with slot 1
    // which restarts a from scratch token by token.
    model
        .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &b[..25] }], LogitsFor::Last, &mut logits)
        .unwrap();
    for i in 25..seq {
        let chunks = [
            SeqChunk {
                slot: 0,
                tokens: &b[i..i + 1],
            },
            SeqChunk {
                slot: 1,
                tokens: &a[i - 25..i - 24],
            },
        ];
        model.forward_cached(&mut cache, &chunks, LogitsFor::Last, &mut logits).unwrap();
        let want_b = &full[(seq + i) * v..(seq + i + 1) * v];
        let want_a = &full[(i - 25) * v..(i - 24) * v];
        for (x, y) in logits[..v].iter().zip(want_b) {
            assert!((x - y).abs() < 1e-9, "decode b pos {i}");
        }
        for (x, y) in logits[v..2 * v].iter().zip(want_a) {
            assert!((x - y).abs() < 1e-9, "decode a pos {}", i - 25);
        }
    }
    assert_eq!(cache.len(0), seq);
    cache.reset(0);
    assert_eq!(cache.len(0), 0);
    let too_long = vec![1u32; 65];
    let e = model
        .forward_cached(
            &mut cache,
            &[SeqChunk {
                slot: 0,
                tokens: &too_long,
            }],
            LogitsFor::Last,
            &mut logits,
        )
        .unwrap_err();
    assert!(e.to_string().contains("context length"), "{e}");
}

#[test]
fn training_step_is_deterministic() {
    let cfg = tiny(false);
    let run = || {
        let mut model = Model::<f32>::new(cfg.clone(), 0.02, 9).unwrap();
        let mut acts = Activations::new(&cfg, 3, 50).unwrap();
        let toks = tokens(150, cfg.vocab_size, 6);
        let targets = tokens(150, cfg.vocab_size, 7);
        let loss = model
            .forward_backward(&mut acts, Input::Tokens(&toks), &targets, &AttnMask::causal(50), 1.0)
            .unwrap();
        (loss, model.grads)
    };
    let (l1, g1) = run();
    let (l2, g2) = run();
    assert_eq!(l1, l2);
    assert_eq!(g1, g2);
    assert!(
        (l1 - (cfg.vocab_size as f64).ln()).abs() < 0.1,
        "initial loss {l1} should be near ln(vocab)"
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = tiny(false);
    let mut model = Model::<f32>::new(cfg.clone(), 0.02, 1).unwrap();
    let mut acts = Activations::new(&cfg, 1, 4).unwrap();
    let mask = AttnMask::causal(4);
    let e = model
        .forward_backward(&mut acts, Input::Tokens(&[1, 2, 99, 3]), &[1, 2, 3, 4], &mask, 1.0)
        .unwrap_err();
    assert!(e.to_string().contains("token id 99"));
    let e = model
        .forward_backward(&mut acts, Input::Tokens(&[1, 2, 3]), &[1, 2, 3], &mask, 1.0)
        .unwrap_err();
    assert!(e.to_string().contains("3 targets"), "{e}");
    assert!(Activations::<f32>::new(&cfg, 1, 81).is_err());
}

/// The few-row decode step splits every product between the pool's workers;
/// each output is computed the same way whatever the split, so the logits must
/// be bit-identical to a single-threaded run.
#[test]
fn decode_step_gives_identical_logits_on_one_thread_and_on_the_pool() {
    let cfg = common::small_config(64);
    let model = Model::<f32>::new(cfg.clone(), 0.1, 3).unwrap();
    let prompt = tokens(3, cfg.vocab_size, 1);
    let decode = || {
        let mut cache = KvCache::<f32>::new(&cfg, 2, 32);
        let mut logits = Vec::new();
        let mut all = Vec::new();
        // A three-token prefill and then two slots decoding side by side.
        model
            .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &prompt }], LogitsFor::All, &mut logits)
            .unwrap();
        all.extend_from_slice(&logits);
        for i in 0..12u32 {
            let (t0, t1) = ([i % 300], [(i * 7 + 1) % 300]);
            let chunks = [SeqChunk { slot: 0, tokens: &t0 }, SeqChunk { slot: 1, tokens: &t1 }];
            model.forward_cached(&mut cache, &chunks, LogitsFor::Last, &mut logits).unwrap();
            all.extend_from_slice(&logits);
        }
        all
    };
    let pooled = decode();
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(decode);
    assert_eq!(pooled.len(), (3 + 12 * 2) * cfg.vocab_size);
    assert!(pooled.iter().all(|x| x.is_finite()));
    assert_eq!(pooled, single);
}
