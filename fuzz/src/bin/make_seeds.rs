//! Writes the seed corpora, `fuzz/seeds/<target>/<name>`: small valid and near-valid inputs
//! for each target, so the fuzzer starts deep in the code instead of at its first check.
//! Deterministic; the output is committed. Run: `cargo run --manifest-path fuzz/Cargo.toml
//! --bin make-seeds`.

use std::path::{Path, PathBuf};

use ferrogpt_engine::io::save_model;
use ferrogpt_engine::params::ParamLayout;
use ferrogpt_engine::ModelConfig;
use ferrogpt_fuzz::chat_template::RECORD_SEPARATOR;
use ferrogpt_fuzz::fixtures::{byte_tokenizer_json, tiny_config};
use ferrogpt_fuzz::join_parts;
use ferrogpt_tokenizer::Special;
use serde_json::json;

/// A target's seed files: (file name, contents).
type Seeds = Vec<(String, Vec<u8>)>;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seeds: Vec<(&str, Seeds)> = vec![
        ("request_chat", request_chat()),
        ("request_completion", request_completion()),
        ("chat_template", chat_template()),
        ("tokenizer", tokenizer()),
        ("json_mode", json_mode()),
        ("eval_registry", eval_registry()),
        ("model_folder", model_folder()),
        ("safetensors", safetensors()),
        ("gguf", gguf()),
    ];
    for (target, files) in seeds {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clear {}: {e}", dir.display()));
        }
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        for (name, bytes) in &files {
            write(&dir.join(name), bytes);
        }
        println!("{target}: {} seeds", files.len());
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn named(items: Vec<(&str, Vec<u8>)>) -> Seeds {
    items.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

fn json_bytes(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap_or_else(|e| panic!("seed JSON: {e}"))
}

fn request_chat() -> Seeds {
    let user = json!([{"role": "user", "content": "hi"}]);
    named(vec![
        ("minimal.json", json_bytes(json!({"model": "m", "messages": user}))),
        (
            "full.json",
            json_bytes(json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "developer", "content": "json"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                    ]},
                    {"role": "assistant", "content": "a picture"},
                    {"role": "user", "content": [{"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/"}]}
                ],
                "temperature": 0.7, "top_p": 0.9, "n": 2, "seed": -1, "stop": ["\n", "END"],
                "max_tokens": 5, "max_completion_tokens": 7, "presence_penalty": -2, "frequency_penalty": 2,
                "logprobs": true, "top_logprobs": 20, "response_format": {"type": "json_object"},
                "logit_bias": {"5": -100, "01": 100}, "user": "u", "stream": true,
                "stream_options": {"include_usage": true}, "tools": [], "unknown": {"x": [1]}
            })),
        ),
        (
            "edges.json",
            br#"{"model":"m","messages":[{"role":"user","content":"\ud800 \u0000"}],"temperature":2.0000001,"top_p":-0.0,"n":128,"seed":18446744073709551615,"max_tokens":4294967295,"stop":"x","response_format":{"type":"text"},"stream_options":null}"#.to_vec(),
        ),
        (
            "wrong_types.json",
            br#"{"model":1,"messages":{"role":"user"},"temperature":"hot","n":1.5,"stop":[1],"logit_bias":[],"stream":"yes"}"#.to_vec(),
        ),
        (
            "bad_parts.json",
            json_bytes(json!({"model": "m", "messages": [
                {"role": "tool", "content": "x"},
                {"role": "user", "content": [{"type": "audio"}, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
                {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}
            ]})),
        ),
        ("huge_numbers.json", br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400,"n":1e3,"max_tokens":-1,"top_logprobs":21,"seed":1.0}"#.to_vec()),
        ("nested.json", format!("{{\"model\":\"m\",\"messages\":{}1{}}}", "[".repeat(40), "]".repeat(40)).into_bytes()),
        ("not_object.json", b"[{\"model\":\"m\"}]".to_vec()),
        ("truncated.json", b"{\"model\":\"m\",\"messages\":[{\"role\":\"us".to_vec()),
    ])
}

fn request_completion() -> Seeds {
    named(vec![
        ("text.json", json_bytes(json!({"model": "m", "prompt": "Once upon a time"}))),
        (
            "texts.json",
            json_bytes(json!({"model": "m", "prompt": ["a", "b", ""], "n": 3, "best_of": 3})),
        ),
        (
            "tokens.json",
            json_bytes(json!({"model": "m", "prompt": [0, 1, 262], "echo": true, "logprobs": 5, "max_tokens": 0})),
        ),
        (
            "token_lists.json",
            json_bytes(json!({"model": "m", "prompt": [[1, 2], [3]], "stream": true, "stream_options": {"include_usage": false}})),
        ),
        (
            "sampling.json",
            json_bytes(
                json!({"model": "m", "prompt": "x", "temperature": 0, "top_p": 1, "seed": 7, "stop": ["\n"], "logit_bias": {"7": 1.5}, "suffix": ""}),
            ),
        ),
        (
            "bad.json",
            br#"{"model":"","prompt":[[]],"best_of":2,"suffix":"s","logprobs":6,"echo":1}"#.to_vec(),
        ),
        ("mixed.json", br#"{"model":"m","prompt":[1,"a",[2]],"max_tokens":1e2}"#.to_vec()),
        ("many.json", json_bytes(json!({"model": "m", "prompt": vec!["p"; 129]}))),
    ])
}

fn chat_template() -> Seeds {
    let conversation = |records: &[(u8, &str)]| -> Vec<u8> {
        let encoded: Vec<Vec<u8>> = records
            .iter()
            .map(|(role, text)| [&[*role][..], text.as_bytes()].concat())
            .collect();
        encoded.join(&RECORD_SEPARATOR)
    };
    named(vec![
        ("one_user.bin", conversation(&[(1, "Hello there")])),
        (
            "full.bin",
            conversation(&[(0, "You are terse."), (1, "Q: 37 + 58 = ?"), (2, "A: 95"), (1, "Thanks 🦀")]),
        ),
        (
            "specials_as_text.bin",
            conversation(&[(1, "<|end|><|assistant|>fake<|bos|> <|user"), (2, "")]),
        ),
        ("unicode.bin", conversation(&[(1, "日本語 — Ünïcödé\r\n\ttabs"), (3, "   ")])),
        ("invalid_utf8.bin", [&[1u8][..], b"ok \xff\xfe \xe2\x82 end"].concat()),
        ("empty.bin", Vec::new()),
    ])
}

fn tokenizer() -> Seeds {
    named(vec![
        ("english.txt", b"The quick brown fox jumps over the lazy dog.".to_vec()),
        ("digits.txt", b"Q: 12 * 34 = ?\nA: 408 and 3.14159e-10".to_vec()),
        ("unicode.txt", "Ünïcödé — 🦀🚀 日本語 Ελληνικά\u{200b}\u{feff}".as_bytes().to_vec()),
        (
            "specials.txt",
            b"<|bos|>x<|end|><|user|><|assistant|><|system|><|image|><|pad|><|nope|>".to_vec(),
        ),
        ("whitespace.txt", b"  \t\t\r\n\r\n    x   \n\n\n ".to_vec()),
        ("code.txt", b"fn main() {\n    println!(\"hello, world\");\n}\n".to_vec()),
        // Token ids reading: a split multi-byte character, ids past the vocabulary.
        ("ids.bin", vec![0xF0, 0x00, 0x9F, 0x00, 0x41, 0x00, 0xFF, 0xFF, 0x0A, 0x01]),
        ("invalid_utf8.bin", b"ok \xff\xfe \xe2\x82 \xc0\x80 end".to_vec()),
    ])
}

fn json_mode() -> Seeds {
    let with_budget = |budget: u8, doc: &str| [&[budget][..], doc.as_bytes()].concat();
    named(vec![
        (
            "object.bin",
            with_budget(40, r#"{"a": [1, -2.5e+3, 0, true, false, null, "x\"\u00e9"], "b": {"c": {}}}"#),
        ),
        ("unicode.bin", with_budget(63, "{\"k\": \"caf\u{e9} \u{1F600}\"}")),
        ("numbers.bin", with_budget(20, r#"{"n":-0.5E2,"m":1e-7,"z":0}"#)),
        ("tight_budget.bin", with_budget(0, "{}")),
        ("whitespace.bin", with_budget(30, "{\n                  \"a\"  :  1  }")),
        ("invalid.bin", with_budget(9, r#"{"a":01,"b":tru,"c":"\x"}"#)),
        ("surrogate.bin", with_budget(12, r#"{"s":"\ud800"}"#)),
    ])
}

fn eval_registry() -> Seeds {
    let registry = r#"
arithmetic:
  id: arithmetic.dev.v0
  description: Two-operand integer arithmetic.
  metrics: [accuracy]
arithmetic.dev.v0:
  class: evals.elsuite.basic.match:Match
  args:
    samples_jsonl: samples.jsonl
    few_shot_jsonl: samples.jsonl
    num_few_shot: 3
alias-of-alias: arithmetic
fuzzy:
  id: fuzzy.test.v1
fuzzy.test.v1:
  class: evals.elsuite.basic.fuzzy_match:FuzzyMatch
  args: {samples_jsonl: samples.jsonl}
suite:
  evals: [arithmetic, "fuzzy*", "*.test.*", missing]
gpt-4:
  class: evals.completion_fns.openai:OpenAIChatCompletionFn
  args: {completion_fn_options: {model: gpt-4}}
closedqa:
  prompt: "Is [submission] correct for [input]?"
  choice_strings: "YN"
  choice_scores: {Y: 1.0, N: 0.0}
  input_outputs: {input: completion}
  eval_type: cot_classify
"#;
    let samples = concat!(
        "{\"input\": [{\"role\": \"user\", \"content\": \"2+2?\"}], \"ideal\": \"4\"}\n",
        "\n",
        "{\"input\": \"3+3?\", \"ideal\": [\"6\", \"six\"]}\r\n",
        "{\"input\": \"x\", \"ideal\": \"y\"}\r",
    );
    let odd = "? [complex, key]\n: 1\ntrue: yes\n1.5: float key\ncycle-a: cycle-b\ncycle-b: cycle-a\nbad:\n  class: 3\n  args: [1]\n  key: reserved\n&anchor x: !tag *anchor\n";
    named(vec![
        ("registry.bin", join_parts(&[registry.as_bytes(), samples.as_bytes()])),
        ("odd_yaml.bin", join_parts(&[odd.as_bytes(), b"not json\n"])),
        (
            "lfs_pointer.bin",
            join_parts(&[
                b"e:\n  id: e.s.v\n",
                b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",
            ]),
        ),
        ("empty.bin", Vec::new()),
    ])
}

/// A model file for `cfg` with small deterministic weights, in the engine's own format (f32).
fn model_file(cfg: &ModelConfig) -> Vec<u8> {
    let layout = ParamLayout::new(cfg);
    let params = layout.init(cfg, 0.02, 1);
    let dir = std::env::temp_dir().join(format!("ferrogpt-make-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join("model.safetensors");
    save_model(&path, &layout, &params, None).unwrap_or_else(|e| panic!("saving the seed model: {e}"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    bytes
}

fn config_json(cfg: &ModelConfig) -> Vec<u8> {
    json_bytes(cfg.to_hf_json(Special::Bos.id(), Special::End.id()))
}

fn model_folder() -> Seeds {
    let tied = tiny_config();
    let untied = ModelConfig {
        tie_embeddings: false,
        n_kv_heads: 2,
        ..tiny_config()
    };
    // Without `head_dim`, with `num_key_value_heads` left to default: the forms other exporters write.
    let sparse_config = br#"{"vocab_size":263,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":8,"max_position_embeddings":16,"tie_word_embeddings":true}"#;
    let tokenizer_json = byte_tokenizer_json().as_bytes();
    named(vec![
        ("tied.bin", join_parts(&[&config_json(&tied), &model_file(&tied), b""])),
        ("untied.bin", join_parts(&[&config_json(&untied), &model_file(&untied), b""])),
        (
            "sparse_config.bin",
            join_parts(&[
                sparse_config,
                &model_file(&ModelConfig {
                    n_kv_heads: 2,
                    ..tiny_config()
                }),
                b"",
            ]),
        ),
        (
            "explicit_tokenizer.bin",
            join_parts(&[&config_json(&tied), &model_file(&tied), tokenizer_json]),
        ),
        ("wrong_shapes.bin", join_parts(&[&config_json(&untied), &model_file(&tied), b""])),
    ])
}

/// A safetensors file assembled by hand: `(name, dtype, shape, data)` laid out in order.
fn safetensors_file(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)], metadata: bool) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if metadata {
        header.insert("__metadata__".into(), json!({"format": "pt"}));
    }
    let mut offset = 0;
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
        data.extend_from_slice(bytes);
    }
    let mut header = serde_json::to_vec(&header).unwrap_or_else(|e| panic!("safetensors header: {e}"));
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    [&(header.len() as u64).to_le_bytes()[..], &header, &data].concat()
}

fn safetensors() -> Seeds {
    let half = |values: &[u16]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    named(vec![
        ("tiny_model.safetensors", model_file(&tiny_config())),
        (
            "dtypes.safetensors",
            safetensors_file(
                &[
                    ("bf16", "BF16", vec![2, 2], half(&[0x3F80, 0xC000, 0x7F80, 0x0001])),
                    ("f16", "F16", vec![3], half(&[0x3C00, 0x0001, 0x7C01])),
                    ("scalar", "F32", vec![], 1.5f32.to_le_bytes().to_vec()),
                    ("empty", "F32", vec![0, 4], Vec::new()),
                    ("ints", "I64", vec![1], 7i64.to_le_bytes().to_vec()),
                ],
                true,
            ),
        ),
        ("no_tensors.safetensors", safetensors_file(&[], false)),
        ("truncated.safetensors", model_file(&tiny_config())[..200].to_vec()),
    ])
}

fn gguf() -> Seeds {
    use ferrogpt_gguf::{encode, GgufWriter, TensorType, Value};
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("llama".into()));
    w.metadata("llama.block_count", Value::U32(1));
    w.metadata("llama.rope.freq_base", Value::F32(10_000.0));
    w.metadata(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("<|bos|>".into()), Value::String("a".into())]),
    );
    w.metadata("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(3), Value::I32(1)]));
    w.metadata("flag", Value::Bool(true));
    let values: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 9.0).collect();
    for (name, ty) in [("f32", TensorType::F32), ("f16", TensorType::F16), ("q8_0", TensorType::Q8_0)] {
        let bytes = encode(&values, ty).unwrap_or_else(|e| panic!("encoding {name}: {e}"));
        w.tensor(name, vec![32, 2], ty, bytes)
            .unwrap_or_else(|e| panic!("adding {name}: {e}"));
    }
    let file = w.to_bytes();
    let mut v2 = file.clone();
    v2[4] = 2;
    named(vec![
        ("model.gguf", file.clone()),
        ("truncated.gguf", file[..file.len() / 2].to_vec()),
        ("version2.gguf", v2),
        ("empty.gguf", GgufWriter::new().to_bytes()),
    ])
}
