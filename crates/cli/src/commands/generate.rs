//! `ferrogpt generate`: sample from a model folder, streaming to stdout.

use anyhow::Context;
use ferrogpt_infer::{render_chat, text_prompt, ChatMessage, LocalModel, Role, SamplingParams};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    /// Text to continue (or the user message with --chat)
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// 0 = greedy
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop sequences (repeatable)
    #[arg(long)]
    stop: Vec<String>,
    /// Wrap the prompt in the chat template (with an optional --system message)
    #[arg(long)]
    chat: bool,
    #[arg(long)]
    system: Option<String>,
    /// Independent samples to draw (seeds seed, seed+1, ...)
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Instead of sampling, write the prompt's token ids and the model's logits at every
    /// position to this JSON file (`{"ids": [...], "logits": [[...], ...]}`), to compare
    /// with another implementation of the same weights
    #[arg(long)]
    logits_out: Option<PathBuf>,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let lm = LocalModel::load(&a.model).with_context(|| format!("loading model folder {}", a.model.display()))?;
    let tok = lm.tokenizer();
    let prompt = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new(Role::System, s.clone()));
        }
        msgs.push(ChatMessage::new(Role::User, a.prompt.clone()));
        render_chat(tok, &msgs)?
    } else {
        text_prompt(tok, &a.prompt).ids
    };
    if let Some(path) = &a.logits_out {
        let logits = lm.logits(&prompt)?;
        let rows: Vec<&[f32]> = logits.chunks_exact(lm.config().head_rows()).collect();
        let json = serde_json::json!({"ids": prompt, "logits": rows});
        std::fs::write(path, json.to_string()).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote the logits of {} tokens to {}", prompt.len(), path.display());
        return Ok(());
    }
    let stdout = std::io::stdout();
    for i in 0..a.num_samples.max(1) {
        let params = SamplingParams {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            max_tokens: Some(a.max_tokens),
            seed: Some(a.seed + i as u64),
            stop: a.stop.clone(),
            ..Default::default()
        };
        let mut out = stdout.lock();
        if !a.chat {
            write!(out, "{}", a.prompt)?;
        }
        let started = std::time::Instant::now();
        let c = lm.complete(&prompt, &params, &mut |s| {
            let _ = write!(out, "{s}");
            let _ = out.flush();
        })?;
        writeln!(out)?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            "{} tokens in {secs:.2}s ({:.0} tokens/s), finish: {:?}",
            c.completion_tokens,
            c.completion_tokens as f64 / secs.max(1e-9),
            c.finish_reason
        );
    }
    Ok(())
}
