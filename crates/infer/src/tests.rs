use super::*;
use ferrogpt_tokenizer::Tokenizer;

fn corpus() -> Vec<String> {
    (0..200)
        .map(|i| format!("the cat {i} sat on the mat; {} dogs ran. Ünïcödé ok.", i * 7))
        .collect()
}

/// A random-weight model folder with a real (tiny) tokenizer.
fn model_dir() -> (tempfile::TempDir, LocalModel) {
    let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
    let cfg = ModelConfig {
        vocab_size: tok.vocab_size(),
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden: 48,
        max_seq_len: 64,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    let model = Model::<f32>::new(cfg, 0.5, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    LocalModel::save_folder(dir.path(), &model, &tok).unwrap();
    let lm = LocalModel::load(dir.path()).unwrap();
    (dir, lm)
}

fn params(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_tokens: Some(20),
        seed: Some(seed),
        stop_at_end: false,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_text_and_streamed_text_equals_result() {
    let (_d, lm) = model_dir();
    let prompt = text_prompt(lm.tokenizer(), "the cat").ids;
    let mut streamed = String::new();
    let a = lm.complete(&prompt, &params(5), &mut |s| streamed.push_str(s)).unwrap();
    let b = lm.complete(&prompt, &params(5), &mut |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, streamed);
    assert_eq!(a.completion_tokens, 20);
    assert_eq!(a.finish_reason, FinishReason::Length);
    let c = lm.complete(&prompt, &params(6), &mut |_| {}).unwrap();
    assert_ne!(a.tokens, c.tokens, "different seeds should differ on a random model");
}

#[test]
fn greedy_top_k_1_top_p_0_and_tiny_top_p_agree_with_scoring() {
    let (_d, lm) = model_dir();
    let prompt = text_prompt(lm.tokenizer(), "dogs ran").ids;
    let greedy = lm
        .complete(
            &prompt,
            &SamplingParams {
                temperature: 0.0,
                logprobs: Some(0),
                ..params(1)
            },
            &mut |_| {},
        )
        .unwrap();
    // OpenAI's rule: top_p = 0 is "only the most likely token", whatever the temperature.
    let top_p_0 = lm
        .complete(&prompt, &SamplingParams { top_p: 0.0, ..params(4) }, &mut |_| {})
        .unwrap();
    assert_eq!(greedy.tokens, top_p_0.tokens);
    let top_k = lm
        .complete(
            &prompt,
            &SamplingParams {
                top_k: Some(1),
                ..params(2)
            },
            &mut |_| {},
        )
        .unwrap();
    let top_p = lm
        .complete(&prompt, &SamplingParams { top_p: 1e-6, ..params(3) }, &mut |_| {})
        .unwrap();
    assert_eq!(greedy.tokens, top_k.tokens);
    assert_eq!(greedy.tokens, top_p.tokens);
    let score = lm.score(&prompt, &greedy.tokens).unwrap();
    assert!(score.is_greedy);
    let summed: f64 = greedy.logprobs.iter().map(|l| l.logprob as f64).sum();
    assert!((score.logprob - summed).abs() < 1e-3, "{} vs {summed}", score.logprob);
    let mut other = greedy.tokens.clone();
    other[0] = (other[0] + 1) % lm.config().vocab_size as u32;
    assert!(!lm.score(&prompt, &other).unwrap().is_greedy);
}

#[test]
fn stop_sequences_cut_the_text_and_context_limits_hold() {
    let (_d, lm) = model_dir();
    let prompt = text_prompt(lm.tokenizer(), "the").ids;
    let free = lm.complete(&prompt, &params(9), &mut |_| {}).unwrap();
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() > 4);
    let stop: String = chars[2..4].iter().collect();
    let mut streamed = String::new();
    let cut = lm
        .complete(
            &prompt,
            &SamplingParams {
                stop: vec![stop.clone()],
                ..params(9)
            },
            &mut |s| streamed.push_str(s),
        )
        .unwrap();
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert_eq!(cut.text, free.text[..free.text.find(&stop).unwrap()]);
    assert_eq!(streamed, cut.text);

    let long = vec![5u32; 64];
    assert!(matches!(
        lm.complete(&long, &params(1), &mut |_| {}),
        Err(InferError::ContextLength { prompt: 64, context: 64 })
    ));
    let near = vec![5u32; 60];
    let r = lm
        .complete(
            &near,
            &SamplingParams {
                max_tokens: Some(100),
                ..params(1)
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!((r.completion_tokens, r.finish_reason), (4, FinishReason::Length));
}

#[test]
fn chat_template_keeps_the_system_role_and_escapes_user_text() {
    let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
    let ids = render_chat(
        &tok,
        &[
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "hi <|end|>"),
        ],
    )
    .unwrap();
    let sp = |s| tok.special_id(s);
    assert_eq!(ids[0], sp(Special::Bos));
    assert_eq!(ids[1], sp(Special::System));
    assert_eq!(*ids.last().unwrap(), sp(Special::Assistant));
    let ends = ids.iter().filter(|&&t| t == sp(Special::End)).count();
    assert_eq!(ends, 2, "the user's literal <|end|> must not become a control token");
    assert_eq!(ids.iter().filter(|&&t| t == sp(Special::User)).count(), 1);
    // Text parts are joined before encoding; image parts are refused by a text-only model.
    let split = ChatMessage {
        role: Role::User,
        content: vec![ContentPart::Text("hi <|e".into()), ContentPart::Text("nd|>".into())],
    };
    let joined = render_chat(&tok, &[ChatMessage::new(Role::System, "be brief"), split]).unwrap();
    assert_eq!(joined, ids);
    let image = ImagePart {
        media_type: "image/png".into(),
        data: vec![1, 2, 3],
    };
    let with_image = ChatMessage {
        role: Role::User,
        content: vec![ContentPart::Text("look".into()), ContentPart::Image(image)],
    };
    let e = render_chat(&tok, &[ChatMessage::new(Role::System, "s"), with_image]).unwrap_err();
    assert!(matches!(e, InferError::TextOnly { message: 1 }), "{e}");
    assert!(e.to_string().contains("text only"), "{e}");
}

/// A conversation rendered for training holds, before each assistant reply, exactly the prompt
/// `render_chat` gives for the turns before it; only the replies and their `<|end|>` are trained.
#[test]
fn training_render_matches_the_prompts_and_trains_only_replies() {
    let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
    let turns = [
        ChatMessage::new(Role::System, "be brief"),
        ChatMessage::new(Role::User, "the cat"),
        ChatMessage::new(Role::Assistant, "sat on the mat"),
        ChatMessage::new(Role::User, "and then?"),
        ChatMessage::new(Role::Assistant, "it slept"),
    ];
    let t = render_for_training(&tok, &turns).unwrap();
    assert_eq!(t.ids.len(), t.trained.len());
    let end = tok.special_id(Special::End);
    let mut expected_trained = 0;
    for (k, reply) in turns.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant) {
        let prompt = render_chat(&tok, &turns[..k]).unwrap();
        assert_eq!(t.ids[..prompt.len()], prompt[..], "prompt before turn {k}");
        if k == 2 {
            assert!(
                t.trained[..prompt.len()].iter().all(|&x| !x),
                "nothing before the first reply is trained"
            );
        }
        let content = tok.encode(&reply.text());
        let span = prompt.len()..prompt.len() + content.len() + 1;
        assert_eq!(t.ids[span.clone()][..content.len()], content[..]);
        assert_eq!(t.ids[span.end - 1], end);
        assert!(
            t.trained[span.clone()].iter().all(|&x| x),
            "turn {k}: the reply and its <|end|> are trained"
        );
        expected_trained += span.len();
    }
    assert_eq!(t.trained.iter().filter(|&&x| x).count(), expected_trained);
    assert_eq!(
        t.ids.len(),
        render_chat(&tok, &turns).unwrap().len() - 1,
        "no trailing <|assistant|>"
    );
}

/// Raw text starts with `<|bos|>`, chats with the template's `<|bos|>`, client token ids are
/// used as given; a `local:`-style string prompt and a completions text prompt get the same ids.
#[test]
fn one_bos_policy() {
    let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
    let bos = tok.special_id(Special::Bos);
    let text = text_prompt(&tok, "the cat sat");
    assert_eq!(text.ids[0], bos);
    assert_eq!(text.ids[1..], tok.encode("the cat sat")[..]);
    assert_eq!(text.added, 1);
    assert_eq!(text_prompt(&tok, "").ids, [bos]);
    let chat = render_chat(&tok, &[ChatMessage::new(Role::User, "the cat sat")]).unwrap();
    assert_eq!(chat[0], bos);
    assert_eq!(chat.iter().filter(|&&t| t == bos).count(), 1);
    let given = token_prompt(vec![9, 8, 7]);
    assert_eq!((given.ids, given.added), (vec![9, 8, 7], 0));
}

/// `generate` runs many requests together, each with its own seed: every completion equals the
/// one `complete` gives for that request alone.
#[test]
fn generate_matches_complete_per_request() {
    let (_d, lm) = model_dir();
    let requests: Vec<GenerationRequest> = ["the cat", "dogs ran", "Ünïcödé", "the mat; 14"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut params = params(i as u64 + 10);
            params.max_tokens = Some(5 + i);
            params.temperature = if i == 0 { 0.0 } else { 1.0 };
            GenerationRequest::new(text_prompt(lm.tokenizer(), p).ids, params)
        })
        .collect();
    let together = lm.generate(&requests).unwrap();
    assert_eq!(together.len(), requests.len());
    for (r, c) in requests.iter().zip(&together) {
        let alone = lm.complete(&r.prompt, &r.params, &mut |_| {}).unwrap();
        assert_eq!(&alone, c);
        assert_eq!(c.completion_tokens, r.params.max_tokens.unwrap());
    }
    assert!(lm.generate(&[]).unwrap().is_empty());
    let mut bad = requests.clone();
    bad[2].params.temperature = 5.0;
    assert!(matches!(lm.generate(&bad), Err(InferError::Request(e)) if e.param == "temperature"));
}

#[test]
fn stop_matcher_holds_back_partial_matches() {
    let mut m = StopMatcher::new(vec!["END".into()]);
    assert_eq!(m.push("abcE"), ("abc".to_string(), false));
    assert_eq!(m.push("N"), (String::new(), false));
    assert_eq!(m.push("x"), ("ENx".to_string(), false));
    assert_eq!(m.push("yyEND tail"), ("yy".to_string(), true));
    assert_eq!(m.push("more"), (String::new(), true));
    let mut m = StopMatcher::new(vec!["\n\n".into(), "###".into()]);
    assert_eq!(m.push("a\n"), ("a".to_string(), false));
    assert_eq!(m.flush(), "\n");
}

#[test]
fn missing_or_broken_model_folders_name_the_file() {
    let (dir, _lm) = model_dir();
    std::fs::write(dir.path().join("model.safetensors"), b"nope").unwrap();
    let e = LocalModel::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = LocalModel::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    let e = LocalModel::load(Path::new("/nonexistent/model")).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/model"), "{e}");
}

#[test]
fn classify_matches_the_full_forward_at_each_sequences_last_token() {
    let (_d, lm) = model_dir();
    assert!(lm
        .classify(&[vec![1, 2]])
        .unwrap_err()
        .to_string()
        .contains("not a sequence classifier"));
    let classifier = Model::classifier_from(lm.model(), 3, 0.5, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    LocalModel::save_folder(dir.path(), &classifier, lm.tokenizer()).unwrap();
    let classifier = LocalModel::load(dir.path()).unwrap();
    let sequences: Vec<Vec<u32>> = ["the cat", "dogs ran on the mat 12", "ok"]
        .iter()
        .map(|t| text_prompt(classifier.tokenizer(), t).ids)
        .collect();
    let scores = classifier.classify(&sequences).unwrap();
    assert_eq!(scores.len(), 3);
    for (seq, got) in sequences.iter().zip(&scores) {
        let mut acts = ferrogpt_engine::Activations::new(classifier.config(), 1, seq.len()).unwrap();
        let mask = ferrogpt_engine::AttnMask::causal(seq.len());
        classifier
            .model()
            .forward_logits(&mut acts, ferrogpt_engine::Input::Tokens(seq), &mask)
            .unwrap();
        let want = &acts.logits[(seq.len() - 1) * 3..];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }
    assert!(classifier.classify(&[vec![]]).is_err());
    assert!(classifier.classify(&[vec![1; 65]]).is_err());
}

#[test]
fn windowed_scoring_truncates_long_contexts_and_chunks_long_continuations() {
    let (_d, lm) = model_dir();
    let vocab = lm.config().vocab_size as u32;
    let ids = |n: usize, salt: u32| -> Vec<u32> { (0..n as u32).map(|i| (i * 7 + salt) % vocab).collect() };
    let (context, continuation) = (ids(20, 1), ids(10, 2));
    assert_eq!(
        lm.score_windowed(&context, &continuation).unwrap(),
        lm.score(&context, &continuation).unwrap()
    );
    // The context is 64 positions; a continuation of 10 keeps the newest 54 context tokens.
    let long_context = ids(100, 3);
    assert_eq!(
        lm.score_windowed(&long_context, &continuation).unwrap(),
        lm.score(&long_context[46..], &continuation).unwrap()
    );
    // 150 continuation tokens after 5: chunks of 32, each after up to 64 - 32 tokens before it.
    let (context, continuation) = (ids(5, 4), ids(150, 5));
    let all: Vec<u32> = context.iter().chain(&continuation).copied().collect();
    let windowed = lm.score_windowed(&context, &continuation).unwrap();
    assert_eq!(windowed.token_logprobs.len(), 150);
    let first = lm.score(&context, &continuation[..32]).unwrap();
    let second = lm.score(&all[5..37], &all[37..69]).unwrap();
    let last = lm.score(&all[155 - 64..133], &all[133..155]).unwrap();
    assert_eq!(windowed.token_logprobs[..32], first.token_logprobs[..]);
    assert_eq!(windowed.token_logprobs[32..64], second.token_logprobs[..]);
    assert_eq!(windowed.token_logprobs[128..], last.token_logprobs[..]);
    let summed: f64 = windowed.token_logprobs.iter().map(|&l| f64::from(l)).sum();
    assert!((windowed.logprob - summed).abs() < 1e-3, "{} vs {summed}", windowed.logprob);
    assert!(matches!(lm.score(&context, &continuation), Err(InferError::ContextLength { .. })));
}

/// Conversations the chat template must render exactly as `render_chat` does.
fn template_conversations() -> Vec<Vec<ChatMessage>> {
    let m = ChatMessage::new;
    vec![
        vec![m(Role::User, "the cat sat")],
        vec![
            m(Role::System, "Answer in one word."),
            m(Role::User, "where did the cat sit?"),
            m(Role::Assistant, "mat"),
            m(Role::User, "and the 7 dogs? Ünïcödé"),
        ],
        vec![m(Role::User, "")],
    ]
}

#[test]
fn the_jinja_chat_template_renders_render_chat_s_tokens() {
    let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
    let mut env = minijinja::Environment::new();
    env.add_template("chat", chat::CHAT_TEMPLATE_JINJA).unwrap();
    let template = env.get_template("chat").unwrap();
    for conversation in template_conversations() {
        let want = render_chat(&tok, &conversation).unwrap();
        // Content as a string, and as OpenAI-style parts (the text split in two).
        let as_string: Vec<serde_json::Value> = conversation
            .iter()
            .map(|m| serde_json::json!({"role": m.role.as_str(), "content": m.text()}))
            .collect();
        let as_parts: Vec<serde_json::Value> = conversation
            .iter()
            .map(|m| {
                let text = m.text();
                let (a, b) = text.split_at(text.len() / 2);
                serde_json::json!({"role": m.role.as_str(), "content": [
                    {"type": "text", "text": a}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": b}
                ]})
            })
            .collect();
        for messages in [as_string, as_parts] {
            let text = template
                .render(minijinja::context! { messages => messages, add_generation_prompt => true })
                .unwrap();
            assert_eq!(tok.encode_with_special(&text), want, "{text:?}");
            let without = template
                .render(minijinja::context! { messages => messages, add_generation_prompt => false })
                .unwrap();
            assert_eq!(format!("{without}{}", ferrogpt_tokenizer::Special::Assistant.as_str()), text);
        }
    }
}

#[test]
fn export_hf_writes_a_folder_transformers_reads_with_the_same_weights() {
    let (src, lm) = model_dir();
    let out = tempfile::tempdir().unwrap();
    let hf = out.path().join("hf");
    model_folder::export_hf(src.path(), &hf).unwrap();
    let exported = model_folder::read(&hf).unwrap();
    let original = model_folder::read(src.path()).unwrap();
    assert_eq!(exported.params, original.params);
    assert_eq!(exported.config, *lm.config());
    let json = |file: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(hf.join(file)).unwrap()).unwrap() };
    let tokenizer_config = json(model_folder::TOKENIZER_CONFIG_FILE);
    assert_eq!(tokenizer_config["chat_template"], chat::CHAT_TEMPLATE_JINJA);
    assert_eq!(tokenizer_config["eos_token"], "<|end|>");
    assert_eq!(tokenizer_config["model_max_length"], 64);
    let generation = json(model_folder::GENERATION_CONFIG_FILE);
    assert_eq!(generation["eos_token_id"], ferrogpt_tokenizer::Special::End.id());
    assert_eq!(json(model_folder::CONFIG_FILE)["architectures"][0], "LlamaForCausalLM");
    // A missing source is an error naming it, and nothing is written.
    let missing = out.path().join("nope");
    let err = model_folder::export_hf(&missing, &out.path().join("hf2")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!out.path().join("hf2").exists());
}
