//! End-to-end tests of prepare -> shards -> loaders on small corpora.

use std::collections::HashSet;
use std::path::Path;

use ferrogpt_data::{
    prepare, sample_texts, split_of, unigram_bits_per_byte, BatchLoader, DataError, LoaderState, Manifest, PrepareConfig, PrepareFile,
    Source, Split, TokenShards,
};
use ferrogpt_tokenizer::{Special, Tokenizer};

fn tokenizer() -> &'static Tokenizer {
    static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    TOK.get_or_init(|| {
        let sources = [
            "synthetic:arithmetic:300".parse().unwrap(),
            "synthetic:counting:300".parse().unwrap(),
        ];
        let texts = sample_texts(&sources, 1, 1 << 20, false).unwrap();
        Tokenizer::train(texts.into_iter(), 400).unwrap()
    })
}

/// A folder of 60 small text files (each a distinct document) plus a jsonl file.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("corpus");
    std::fs::create_dir_all(root.join("nested")).unwrap();
    for i in 0..60 {
        let sub = if i % 2 == 0 { "" } else { "nested/" };
        let text = format!(
            "Document number {i}. It talks about topic {} at some length, {}.",
            i * 7,
            "words ".repeat(i % 9 + 1)
        );
        std::fs::write(root.join(format!("{sub}doc{i:03}.txt")), text).unwrap();
    }
    let lines: Vec<String> = (0..20).map(|i| format!("{{\"text\": \"jsonl entry {i} with text\"}}")).collect();
    std::fs::write(root.join("extra.jsonl"), lines.join("\n")).unwrap();
    root
}

fn config(root: &Path, seed: u64) -> PrepareConfig {
    let mut c = PrepareConfig::new(vec![
        Source::Path { path: root.to_path_buf() },
        "synthetic:arithmetic:200".parse().unwrap(),
    ]);
    c.seed = seed;
    c.val_fraction = 0.2;
    // Small shards so the test exercises several per split.
    c.shard_tokens = 500;
    c.shuffle_buffer = 16;
    c
}

/// Splits a token stream into documents (text between `<|bos|>` and `<|end|>`).
fn documents(tok: &Tokenizer, tokens: &[u32]) -> Vec<String> {
    let bos = tok.special_id(Special::Bos);
    let end = tok.special_id(Special::End);
    let mut docs = Vec::new();
    let mut cur: Option<Vec<u32>> = None;
    for &t in tokens {
        if t == bos {
            assert!(cur.is_none(), "nested <|bos|>");
            cur = Some(Vec::new());
        } else if t == end {
            docs.push(tok.decode(&cur.take().expect("<|end|> without <|bos|>")));
        } else {
            cur.as_mut().expect("token outside a document").push(t);
        }
    }
    assert!(cur.is_none(), "unterminated document");
    docs
}

#[test]
fn same_seed_gives_identical_shards_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let ma = prepare(&config(&root, 7), tokenizer(), &a, false).unwrap();
    let mb = prepare(&config(&root, 7), tokenizer(), &b, false).unwrap();
    let mc = prepare(&config(&root, 8), tokenizer(), &c, false).unwrap();
    assert_eq!(ma, mb);
    assert_eq!(
        std::fs::read(a.join("manifest.json")).unwrap(),
        std::fs::read(b.join("manifest.json")).unwrap()
    );
    assert!(ma.shards.len() > 2, "expected several shards");
    for s in &ma.shards {
        assert_eq!(std::fs::read(a.join(&s.file)).unwrap(), std::fs::read(b.join(&s.file)).unwrap());
    }
    assert_ne!(ma.shards, mc.shards, "a different seed should shuffle and split differently");

    // Totals add up and every document is in exactly one split.
    assert_eq!(ma.totals.train.documents + ma.totals.val.documents, 60 + 20 + 200);
    assert_eq!(ma.sources[0].documents, 80);
    assert_eq!(ma.sources[1].documents, 200);
    assert!(ma.totals.val.documents > 20 && ma.totals.val.documents < 100);
    assert_eq!(ma.tokenizer_fingerprint, tokenizer().fingerprint());
    assert_eq!(
        Tokenizer::from_file(&a.join("tokenizer.json")).unwrap().fingerprint(),
        tokenizer().fingerprint()
    );
}

#[test]
fn split_is_by_document_and_follows_the_key_hash() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = dir.path().join("out");
    let cfg = config(&root, 3);
    prepare(&cfg, tokenizer(), &out, false).unwrap();
    let train = TokenShards::open(&out, Split::Train).unwrap();
    let val = TokenShards::open(&out, Split::Val).unwrap();
    let train_docs: HashSet<String> = documents(tokenizer(), train.tokens()).into_iter().collect();
    let val_docs: HashSet<String> = documents(tokenizer(), val.tokens()).into_iter().collect();
    for i in 0..60 {
        let sub = if i % 2 == 0 { "" } else { "nested/" };
        let rel = format!("{sub}doc{i:03}.txt");
        let text = std::fs::read_to_string(root.join(&rel)).unwrap();
        let want = split_of(cfg.seed, &rel, cfg.val_fraction);
        let (inside, outside) = match want {
            Split::Train => (&train_docs, &val_docs),
            Split::Val => (&val_docs, &train_docs),
        };
        assert!(inside.contains(&text), "{rel} missing from {want}");
        assert!(!outside.contains(&text), "{rel} leaked into the other split");
    }
    assert!(val_docs.iter().any(|d| d.starts_with("Q: ")), "synthetic docs reach val too");
}

#[test]
fn corrupt_or_truncated_shards_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = dir.path().join("out");
    let manifest = prepare(&config(&root, 1), tokenizer(), &out, false).unwrap();
    let victim = manifest.shards.iter().find(|s| s.split == Split::Train).unwrap();
    let path = out.join(&victim.file);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let err = TokenShards::open(&out, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::ShardChecksum { .. }), "{err}");
    assert!(err.to_string().contains(&victim.file), "{err}");
    // The other split is untouched and still loads.
    TokenShards::open(&out, Split::Val).unwrap();

    // A truncated file whose checksum was "fixed up" still fails on its header, by name.
    bytes.truncate(20);
    std::fs::write(&path, &bytes).unwrap();
    let mut m = Manifest::load(&out).unwrap();
    for s in &mut m.shards {
        if s.file == victim.file {
            s.sha256 = ferrogpt_tokenizer::hex(&sha256(&bytes));
        }
    }
    std::fs::write(out.join("manifest.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let err = TokenShards::open(&out, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::ShardHeader { .. }), "{err}");
    assert!(err.to_string().contains(&victim.file), "{err}");

    std::fs::remove_file(&path).unwrap();
    let err = TokenShards::open(&out, Split::Train).unwrap_err().to_string();
    assert!(err.contains(&victim.file), "{err}");
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[test]
fn missing_and_empty_sources_fail_with_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = PrepareConfig::new(vec![Source::Path {
        path: dir.path().join("nowhere"),
    }]);
    let err = prepare(&missing, tokenizer(), &out, false).unwrap_err().to_string();
    assert!(err.contains("nowhere") && err.contains("does not exist"), "{err}");

    let blank = dir.path().join("blank");
    std::fs::create_dir(&blank).unwrap();
    std::fs::write(blank.join("a.txt"), "   \n\n").unwrap();
    let cfg = PrepareConfig::new(vec!["synthetic:counting:10".parse().unwrap(), Source::Path { path: blank.clone() }]);
    let err = prepare(&cfg, tokenizer(), &out, false).unwrap_err();
    assert!(matches!(err, DataError::EmptySource { .. }), "{err}");
    assert!(err.to_string().contains("blank"), "{err}");

    let err = prepare(&PrepareConfig::new(vec![]), tokenizer(), &out, false).unwrap_err();
    assert!(matches!(err, DataError::NoSources), "{err}");
    let mut bad = PrepareConfig::new(vec!["synthetic:counting:10".parse().unwrap()]);
    bad.val_fraction = 1.5;
    let err = prepare(&bad, tokenizer(), &out, false).unwrap_err().to_string();
    assert!(err.contains("val_fraction"), "{err}");
}

#[test]
fn byte_cap_limits_the_corpus_and_samples_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let mut cfg = config(&root, 2);
    cfg.max_bytes = Some(3000);
    let m = prepare(&cfg, tokenizer(), &dir.path().join("out"), false).unwrap();
    let bytes = m.totals.train.bytes + m.totals.val.bytes;
    assert!((3000..3200).contains(&bytes), "{bytes}");
    assert!(m.sources.iter().all(|s| s.documents > 0), "{:?}", m.sources);

    let texts = sample_texts(&cfg.sources, 2, 3000, false).unwrap();
    let total: usize = texts.iter().map(String::len).sum();
    assert!((3000..3200).contains(&total), "{total}");
}

#[test]
fn loader_resumes_exactly_and_batches_are_shifted_windows() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = dir.path().join("out");
    prepare(&config(&root, 4), tokenizer(), &out, false).unwrap();
    let (batch, seq) = (4, 16);
    let mut loader = BatchLoader::new(TokenShards::open(&out, Split::Train).unwrap(), batch, seq, 11).unwrap();
    let windows = loader.windows_per_epoch();
    assert!(windows > 2 * batch);

    let b = loader.next_batch();
    assert_eq!((b.inputs.len(), b.targets.len(), b.rows), (batch * seq, batch * seq, batch));
    let tokens = loader.shards().tokens().to_vec();
    for r in 0..batch {
        let row = &b.inputs[r * seq..(r + 1) * seq];
        let tgt = &b.targets[r * seq..(r + 1) * seq];
        assert_eq!(&row[1..], &tgt[..seq - 1]);
        // Windows start at multiples of seq_len and targets continue the window.
        let found = (0..windows).any(|w| {
            let start = w * seq;
            &tokens[start..start + seq] == row && tokens[start + seq] == tgt[seq - 1]
        });
        assert!(found, "row {r} is not an aligned window");
    }

    // Run into the second epoch, save the state mid-way, continue on a fresh loader.
    let steps_to_mid_epoch = windows / batch + 2;
    for _ in 0..steps_to_mid_epoch {
        loader.next_batch();
    }
    let saved = serde_json::to_string(&loader.state()).unwrap();
    let expected: Vec<_> = (0..windows / batch + 3).map(|_| loader.next_batch()).collect();
    let mut resumed = BatchLoader::new(TokenShards::open(&out, Split::Train).unwrap(), batch, seq, 11).unwrap();
    let state: LoaderState = serde_json::from_str(&saved).unwrap();
    resumed.restore(&state).unwrap();
    let got: Vec<_> = (0..expected.len()).map(|_| resumed.next_batch()).collect();
    assert_eq!(got, expected);
    assert!(resumed.epoch_progress() > 2.0);

    // Within one epoch every window is visited exactly once.
    let mut fresh = BatchLoader::new(TokenShards::open(&out, Split::Train).unwrap(), 1, seq, 5).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..windows {
        seen.insert(fresh.next_batch().inputs);
    }
    let distinct_windows: HashSet<&[u32]> = tokens.chunks(seq).take(windows).collect();
    assert_eq!(seen.len(), distinct_windows.len());

    let mut wrong = BatchLoader::new(TokenShards::open(&out, Split::Train).unwrap(), batch + 1, seq, 11).unwrap();
    let err = wrong.restore(&state).unwrap_err().to_string();
    assert!(err.contains("batch"), "{err}");
}

#[test]
fn sequential_val_batches_cover_every_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = dir.path().join("out");
    prepare(&config(&root, 5), tokenizer(), &out, false).unwrap();
    let val = TokenShards::open(&out, Split::Val).unwrap();
    let seq = 8;
    let batches: Vec<_> = val.sequential_batches(3, seq).unwrap().collect();
    let rows: usize = batches.iter().map(|b| b.rows).sum();
    assert_eq!(rows, val.windows(seq));
    let again: Vec<_> = val.sequential_batches(3, seq).unwrap().collect();
    assert_eq!(batches, again);
    let inputs: Vec<u32> = batches.iter().flat_map(|b| b.inputs.iter().copied()).collect();
    assert_eq!(&inputs[..], &val.tokens()[..rows * seq]);
    let target_bytes: u64 = batches.iter().map(|b| b.target_bytes(tokenizer())).sum();
    assert!(target_bytes > 0 && target_bytes <= val.text_bytes());

    let train = TokenShards::open(&out, Split::Train).unwrap();
    train.check_tokenizer(tokenizer()).unwrap();
    let bpb = unigram_bits_per_byte(&train, &val, tokenizer()).unwrap();
    assert!(bpb > 0.5 && bpb < 8.0, "{bpb}");

    let err = val.sequential_batches(2, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("val"), "{err}");
}

#[test]
fn prepare_toml_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prepare.toml");
    std::fs::write(
        &path,
        "tokenizer = \"tok.json\"\nout = \"shards\"\nseed = 3\nmax_bytes = 1000\n\n[[sources]]\nkind = \"synthetic\"\ngenerator = \"arithmetic\"\ncount = 10\n",
    )
    .unwrap();
    let file = PrepareFile::load(&path).unwrap();
    assert_eq!(file.config().seed, 3);
    assert_eq!(file.config().max_bytes, Some(1000));

    std::fs::write(&path, "seeed = 3\nsources = []\n").unwrap();
    let err = PrepareFile::load(&path).unwrap_err().to_string();
    assert!(err.contains("seeed") && err.contains("prepare.toml"), "{err}");

    std::fs::write(&path, "val_fraction = 2.0\n[[sources]]\nkind = \"man_pages\"\n").unwrap();
    let err = PrepareFile::load(&path).unwrap_err().to_string();
    assert!(err.contains("val_fraction"), "{err}");
}

/// A gzipped dictd-format dictionary of `n` GCIDE-like entries, as `dict-gcide` installs it.
fn gcide_fixture(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut text = String::from("\n00-database-short\n   A test dictionary\n\n");
    for i in 0..n {
        text.push_str(&format!(
            "Word{i} \\Word\"{i}\\ (w[=o]rd), n. [AS. word.]\n   1. A sense of word {i}, with {{cross}} references.\n      [1913 Webster]\n\n"
        ));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let path = dir.join("gcide.dict.dz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    path
}

#[test]
fn english_corpora_are_capped_per_source_on_a_seeded_sample() {
    use ferrogpt_data::english::English;
    let dir = tempfile::tempdir().unwrap();
    let gcide = gcide_fixture(dir.path(), 3000);
    let sources = vec![
        Source::English {
            corpus: English::Gcide,
            path: Some(gcide.clone()),
            max_bytes: Some(20_000),
        },
        "synthetic:counting:300".parse().unwrap(),
    ];
    let mut cfg = PrepareConfig::new(sources);
    cfg.seed = 3;
    let out = dir.path().join("out");
    let m = prepare(&cfg, tokenizer(), &out, false).unwrap();
    let dictionary = &m.sources[0];
    // Stops at the first document past the cap (documents are about 4 kB).
    assert!((20_000..20_000 + 4_500).contains(&dictionary.bytes), "{dictionary:?}");
    assert_eq!(m.sources[1].documents, 300, "the uncapped source is whole");
    let train = TokenShards::open(&out, Split::Train).unwrap();
    let docs = documents(tokenizer(), train.tokens());
    let dict_docs: Vec<&String> = docs.iter().filter(|d| d.starts_with("Word")).collect();
    assert!(!dict_docs.is_empty());
    assert!(dict_docs
        .iter()
        .all(|d| !d.contains("[1913 Webster]") && !d.contains('{') && !d.contains('\\')));
    assert!(dict_docs[0].contains(", n. [AS. word.] 1. A sense of word"), "{}", dict_docs[0]);
    // The sample is a seeded one: not the dictionary's first entries, and the same every time.
    assert!(!docs.iter().any(|d| d.starts_with("Word0,")));
    let again = prepare(&cfg, tokenizer(), &dir.path().join("again"), false).unwrap();
    assert_eq!(again.sources, m.sources);
    assert_eq!(again.shards, m.shards);

    let missing = Source::English {
        corpus: English::Gcide,
        path: Some(dir.path().join("absent.dict.dz")),
        max_bytes: None,
    };
    let err = prepare(&PrepareConfig::new(vec![missing]), tokenizer(), &out, false).unwrap_err();
    assert!(matches!(err, DataError::CorpusNotInstalled { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("absent.dict.dz") && msg.contains("apt-get install -y dict-gcide"),
        "{msg}"
    );
}

#[test]
fn val_tokens_know_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = dir.path().join("out");
    let m = prepare(&config(&root, 6), tokenizer(), &out, false).unwrap();
    let val = TokenShards::open(&out, Split::Val).unwrap();
    let sources = val.token_sources().unwrap();
    assert_eq!(sources.len(), val.len());
    // Every val document is one run of its source's index: the folder's documents talk about
    // topics and jsonl entries, the synthetic ones are arithmetic.
    let bos = tokenizer().special_id(Special::Bos);
    let end = tokenizer().special_id(Special::End);
    let mut start = 0;
    let mut seen = [0usize; 2];
    for (i, &t) in val.tokens().iter().enumerate() {
        if t == bos {
            start = i;
        } else if t == end {
            let doc = &sources[start..=i];
            assert!(doc.iter().all(|&s| s == doc[0]), "a document spans sources");
            let text = tokenizer().decode(&val.tokens()[start + 1..i]);
            let from_folder = text.contains("Document number") || text.contains("jsonl entry");
            assert_eq!(doc[0] == 0, from_folder, "{text:?} attributed to source {}", doc[0]);
            seen[doc[0]] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    let runs: u64 = m.val_sources.iter().map(|r| r.tokens).sum();
    assert_eq!(runs, m.totals.val.tokens);

    let train = TokenShards::open(&out, Split::Train).unwrap();
    assert!(train.token_sources().unwrap_err().to_string().contains("val split only"));

    // A manifest from before per-source runs were recorded loads, but cannot be scored by source.
    let path = out.join("manifest.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("val_sources");
    std::fs::write(&path, json.to_string()).unwrap();
    let old = TokenShards::open(&out, Split::Val).unwrap();
    let err = old.token_sources().unwrap_err().to_string();
    assert!(err.contains("prepare the corpus again"), "{err}");
}

/// The default speedrun's corpus with the general-English mix, on the installed corpora
/// (absent ones are left out with a note): per-source documents, bytes, tokens and samples.
/// `cargo test -p ferrogpt-data --test pipeline installed_english_mix -- --ignored --nocapture`
#[test]
#[ignore = "reads the installed corpora and trains a 4096-token tokenizer (minutes)"]
fn installed_english_mix_prepares() {
    use ferrogpt_data::english::English;
    use ferrogpt_data::{build_corpus, CorpusSpec, EnglishSource, SyntheticSource};
    const MB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let spec = CorpusSpec {
        man_pages: true,
        synthetic: vec![SyntheticSource::new("arithmetic", 60_000), SyntheticSource::new("counting", 30_000)],
        english: English::ALL.iter().map(|&c| EnglishSource::new(c, 2 * MB)).collect(),
        vocab_size: 4096,
        tokenizer_bytes: 2 * MB,
        max_bytes: 24 * MB,
        val_fraction: 0.01,
        seed: 0,
    };
    let corpus = build_corpus(&spec, dir.path(), false).unwrap();
    let tok = Tokenizer::from_file(&corpus.tokenizer_path).unwrap();
    let m = &corpus.manifest;
    for s in &m.sources {
        println!("{}: {} documents, {} bytes, {} tokens", s.source, s.documents, s.bytes, s.tokens);
        assert!(s.documents > 0, "{}", s.source);
    }
    println!("total: train {:?}, val {:?}", m.totals.train, m.totals.val);
    let val = TokenShards::open(&corpus.data_dir, Split::Val).unwrap();
    let sources = val.token_sources().unwrap();
    let docs = documents(&tok, val.tokens());
    let mut starts = Vec::new();
    let bos = tok.special_id(Special::Bos);
    for (i, &t) in val.tokens().iter().enumerate() {
        if t == bos {
            starts.push(sources[i]);
        }
    }
    for (index, s) in m.sources.iter().enumerate() {
        let samples: Vec<&String> = docs
            .iter()
            .zip(&starts)
            .filter(|(_, &src)| src == index)
            .map(|(d, _)| d)
            .take(2)
            .collect();
        for d in samples {
            println!("  [{}] {:?}", s.source, d.chars().take(200).collect::<String>());
        }
    }
}
