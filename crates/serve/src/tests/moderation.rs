//! `/v1/moderations` and the chat page's input check against a real classifier: a tiny
//! random-weight language model given an 11-way score head and saved as `rm train` saves one.
//! Expected results are computed here from the classifier's own logits.

use std::path::{Path, PathBuf};

use ferrogpt_chatdata::moderation::{moderation, Moderation, OPENAI_CATEGORIES};
use ferrogpt_chatdata::Category;
use ferrogpt_engine::kernels::post_training::log_softmax;
use ferrogpt_engine::{Model, ModelConfig};
use ferrogpt_infer::text_prompt;
use ferrogpt_infer::LocalModel;
use ferrogpt_tokenizer::Tokenizer;

use super::*;
use crate::moderation::{Moderator, MODERATION_MODEL_ID};

/// The classifier's context, short so that a long input must be truncated.
const CONTEXT: usize = 48;

fn tiny_lm() -> (Model<f32>, Tokenizer) {
    let texts = (0..80).map(|i| format!("The sea {i} is wide; how do I bake bread, fix a bike or hurt someone?"));
    let tok = Tokenizer::train(texts, 320).unwrap();
    let cfg = ModelConfig {
        vocab_size: tok.vocab_size(),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 64,
        max_seq_len: CONTEXT,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    (Model::new(cfg, 0.5, 11).unwrap(), tok)
}

/// Saves a moderation classifier where the speedrun puts one: `model_folder/moderation/`.
fn save_classifier(model_folder: &Path) -> PathBuf {
    let (lm, tok) = tiny_lm();
    let classifier = Model::classifier_from(&lm, Category::ALL.len(), 2.0, 7).unwrap();
    let folder = model_folder.join("moderation");
    LocalModel::save_folder(&folder, &classifier, &tok).unwrap();
    folder
}

/// What the classifier says of `text`, straight from its logits over its last `CONTEXT` tokens.
fn expected(folder: &Path, text: &str) -> Moderation {
    let model = LocalModel::load(folder).unwrap();
    let ids = text_prompt(model.tokenizer(), text).ids;
    let tail = ids[ids.len().saturating_sub(CONTEXT)..].to_vec();
    let logits = model.classify(&[tail]).unwrap();
    let probs: Vec<f64> = log_softmax(&logits[0]).into_iter().map(f64::exp).collect();
    moderation(&probs)
}

const CANDIDATES: [&str; 12] = [
    "The sea is wide.",
    "How do I bake bread?",
    "how do I hurt someone",
    "fix a bike",
    "The sea 7 is wide; how do I bake bread?",
    "bread",
    "someone hurt the sea",
    "wide waves 42",
    "I want to fix the bread bike",
    "how do I",
    "The The The The",
    "hurt hurt hurt",
];

/// One candidate the classifier flags and one it does not.
fn flagged_and_not(folder: &Path) -> (&'static str, &'static str) {
    let flagged = CANDIDATES.iter().find(|t| expected(folder, t).flagged);
    let passed = CANDIDATES.iter().find(|t| !expected(folder, t).flagged);
    match (flagged, passed) {
        (Some(f), Some(p)) => (f, p),
        _ => panic!("the test classifier must flag some candidates and pass others"),
    }
}

impl Harness {
    /// The same server with the classifier in `folder` loaded.
    fn with_moderator(self, folder: &Path) -> Self {
        let Harness {
            dir,
            config,
            state,
            app,
            key,
            gate,
            hold_at,
            tokenized_on,
        } = self;
        drop(app);
        let Ok(state) = Arc::try_unwrap(state) else {
            panic!("the harness's state is shared");
        };
        let state = Arc::new(state.with_moderator(Moderator::load(folder).unwrap()));
        Harness {
            dir,
            config,
            app: router(state.clone()),
            state,
            key,
            gate,
            hold_at,
            tokenized_on,
        }
    }
}

fn moderated_harness(edit: impl FnOnce(&mut Config)) -> (Harness, PathBuf) {
    let h = harness_with(edit);
    let folder = save_classifier(h.dir.path());
    assert_eq!(Moderator::folder_in(h.dir.path()).as_deref(), Some(folder.as_path()));
    (h.with_moderator(&folder), folder)
}

/// A result in OpenAI's shape, equal to `want`.
fn assert_result(got: &Value, want: &Moderation) {
    assert_eq!(got["flagged"], want.flagged, "{got}");
    for name in OPENAI_CATEGORIES {
        assert_eq!(got["categories"][name], want.categories[name], "{name}: {got}");
        let score = got["category_scores"][name].as_f64().unwrap();
        assert!(
            (score - want.category_scores[name]).abs() < 1e-5,
            "{name}: {score} vs {}",
            want.category_scores[name]
        );
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(got["category_applied_input_types"][name], json!(["text"]), "{name}");
    }
    for map in ["categories", "category_scores", "category_applied_input_types"] {
        assert_eq!(got[map].as_object().unwrap().len(), OPENAI_CATEGORIES.len(), "{map}");
    }
}

#[tokio::test]
async fn moderations_answer_string_and_array_input_with_the_classifiers_results() {
    let (h, folder) = moderated_harness(|_| {});
    let (flagged, passed) = flagged_and_not(&folder);

    let (s, headers, v) = h.post("/v1/moderations", json!({"input": flagged})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("modr-"), "{v}");
    assert_eq!(headers["x-request-id"], v["id"].as_str().unwrap());
    assert!(headers.contains_key("x-ratelimit-remaining-requests"));
    assert_eq!(v["model"], MODERATION_MODEL_ID);
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_result(&v["results"][0], &expected(&folder, flagged));
    assert_eq!(v["results"][0]["flagged"], true);

    let inputs = [passed, flagged, "The sea is wide."];
    let (s, _, v) = h
        .post("/v1/moderations", json!({"input": inputs, "model": MODERATION_MODEL_ID}))
        .await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), inputs.len());
    for (got, text) in results.iter().zip(inputs) {
        assert_result(got, &expected(&folder, text));
    }
    assert_eq!(results[0]["flagged"], false);

    // Free, but recorded: the tokens the classifier read, at no cost.
    h.state.flush_ledger();
    let rows = h.state.store().ledger().unwrap();
    assert_eq!(rows.len(), 2);
    let model = LocalModel::load(&folder).unwrap();
    let read: u64 = inputs.iter().map(|t| text_prompt(model.tokenizer(), t).ids.len() as u64).sum();
    let row = &rows[1];
    assert_eq!((row.endpoint.as_str(), row.model.as_str()), ("moderations", MODERATION_MODEL_ID));
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.status), (read, 0, 200));
    assert_eq!(row.cost, 0.0);
    assert_eq!(row.outcome, "ok");

    let (_, _, b) = h.send(h.request("GET", "/v1/models", None, Some(&h.key))).await;
    let list: Value = serde_json::from_slice(&b).unwrap();
    let listed = list["data"].as_array().unwrap().iter().find(|m| m["id"] == MODERATION_MODEL_ID);
    assert_eq!(listed.unwrap()["context_length"], CONTEXT);
}

#[tokio::test]
async fn input_longer_than_the_context_is_truncated_to_its_end() {
    let (h, folder) = moderated_harness(|_| {});
    let long = "The sea is wide and the waves are blue. ".repeat(40);
    let model = LocalModel::load(&folder).unwrap();
    assert!(text_prompt(model.tokenizer(), &long).ids.len() > CONTEXT);
    let (s, _, v) = h.post("/v1/moderations", json!({"input": long})).await;
    assert_eq!(s, 200, "{v}");
    assert_result(&v["results"][0], &expected(&folder, &long));
}

#[tokio::test]
async fn moderations_need_a_valid_key() {
    let (h, _) = moderated_harness(|_| {});
    let body = Some(json!({"input": "hello"}));
    for key in [None, Some("sk-not-a-real-key-0000")] {
        let (s, _, b) = h.send(h.request("POST", "/v1/moderations", body.clone(), key)).await;
        assert_eq!(s, 401);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
}

#[tokio::test]
async fn malformed_moderation_requests_are_openai_shaped_400s() {
    let (h, _) = moderated_harness(|_| {});
    let cases = [
        (json!({}), "input"),
        (json!({"input": ""}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": 7}), "input"),
        (json!({"input": ["ok", null]}), "input.[1]"),
        (
            json!({"input": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}),
            "input.[0]",
        ),
        (json!({"input": "ok", "model": ["x"]}), "model"),
    ];
    for (body, param) in cases {
        let (s, _, v) = h.post("/v1/moderations", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(v["error"]["param"], param, "{body}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (s, _, b) = h
        .send(
            Request::builder()
                .method("POST")
                .uri("/v1/moderations")
                .header("authorization", format!("Bearer {}", h.key))
                .body(Body::from("{\"input\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    let (s, _, v) = h
        .post("/v1/moderations", json!({"input": "ok", "model": "omni-moderation-latest"}))
        .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn without_a_moderation_model_the_endpoint_says_none_is_loaded() {
    let h = harness();
    let (s, _, v) = h.post("/v1/moderations", json!({"input": "hello"})).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("No moderation model"), "{v}");
    let (_, _, b) = h.send(h.request("GET", "/v1/models", None, Some(&h.key))).await;
    assert!(!String::from_utf8_lossy(&b).contains(MODERATION_MODEL_ID));
    // And the chat page is not moderated.
    let (s, _, _) = h.post("/chat/api/completions", chat_body(json!({}))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn moderations_count_against_the_request_limit() {
    let (h, _) = moderated_harness(|c| c.limits.requests_per_minute = 2);
    for _ in 0..2 {
        let (s, _, v) = h.post("/v1/moderations", json!({"input": "hello"})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, _, v) = h.post("/v1/moderations", json!({"input": "hello"})).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["type"], "requests");
}

#[tokio::test]
async fn a_classifier_must_have_one_output_per_category() {
    let (lm, tok) = tiny_lm();
    let dir = tempfile::tempdir().unwrap();
    LocalModel::save_folder(dir.path(), &lm, &tok).unwrap();
    let err = Moderator::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("num_labels"), "{err}");
    assert_eq!(Moderator::folder_in(dir.path()), None);
}

#[tokio::test]
async fn the_chat_page_refuses_flagged_input_and_counts_it() {
    let (h, folder) = moderated_harness(|_| {});
    let (flagged, passed) = flagged_and_not(&folder);
    let ask = |text: &str| json!({"model": "fake", "messages": [{"role": "user", "content": text}]});

    let (s, _, v) = h.post("/chat/api/completions", ask(flagged)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "content_filter");
    assert!(v["error"]["message"].as_str().unwrap().contains("flagged"), "{v}");
    let (s, _, v) = h.post("/chat/api/completions", ask(passed)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    let (_, _, b) = h.send(h.request("GET", "/chat/api/usage", None, Some(&h.key))).await;
    let usage: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(usage["used"], 2, "the refused message counts too");

    // The API itself is not moderated: its clients call /v1/moderations when they want to.
    let (s, _, _) = h.post("/v1/chat/completions", ask(flagged)).await;
    assert_eq!(s, 200);
}
