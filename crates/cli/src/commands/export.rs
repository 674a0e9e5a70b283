//! `ferrogpt export`

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Subcommand)]
pub enum ExportCommand {
    /// A Hugging Face folder: config.json (LlamaForCausalLM), model.safetensors,
    /// tokenizer.json, tokenizer_config.json with the chat template, generation_config.json
    Hf {
        /// The model folder to export
        #[arg(long)]
        model: PathBuf,
        /// The folder to write (replaced if it is an earlier export)
        #[arg(long)]
        out: PathBuf,
    },
    /// A GGUF file for llama.cpp (Llama architecture, GPT-2-style BPE vocabulary and merges,
    /// special tokens, chat template); matrices in f32, f16 or q8_0, norms in f32
    Gguf {
        /// The model folder to export (a language model)
        #[arg(long)]
        model: PathBuf,
        /// The file to write
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "f32")]
        dtype: ferrogpt_engine::quant::DType,
    },
}

pub fn run(cmd: ExportCommand) -> anyhow::Result<()> {
    match cmd {
        ExportCommand::Hf { model, out } => {
            ferrogpt_infer::model_folder::export_hf(&model, &out)
                .with_context(|| format!("exporting {} to {}", model.display(), out.display()))?;
            println!(
                "wrote {}: load it with transformers' AutoModelForCausalLM.from_pretrained and AutoTokenizer",
                out.display()
            );
            Ok(())
        }
        ExportCommand::Gguf { model, out, dtype } => {
            ferrogpt_gguf::export_gguf(&model, &out, dtype)
                .with_context(|| format!("exporting {} to {}", model.display(), out.display()))?;
            let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!("wrote {} ({dtype}, {:.1} MB)", out.display(), bytes as f64 / 1e6);
            Ok(())
        }
    }
}
