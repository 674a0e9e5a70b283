//! The post-training conversations every stage draws — SFT data, scorer items, RLHF prompts
//! and the held-out requests of the scorecards: chatdata's generators, with questions about
//! the manual pages installed on this machine (the pages the speedrun pretrains on).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use ferrogpt_chatdata::{Example, ManualFacts, Split};
use ferrogpt_data::{man_page_texts, DEFAULT_MAN_ROOT};

use crate::TrainError;

/// Pages read for the manual questions, spread over sections 1 and 8: enough for hundreds of
/// commands per split, read in seconds.
const MANUAL_PAGES: usize = 2_000;

/// Pages of one command, not of a subcommand: some packages install a page per subcommand
/// (`gcloud_compute_ssh.1`, 16,000 of them on one of our machines), which would crowd the
/// commands out of the sample and whose NAME line is no command name.
fn is_command_page(file_name: &str) -> bool {
    !file_name.contains('_')
}

/// The facts of this machine's manual pages, read once per process (empty without pages).
pub fn manual_facts() -> Result<Arc<ManualFacts>, TrainError> {
    static FACTS: Mutex<Option<Arc<ManualFacts>>> = Mutex::new(None);
    let mut cached = FACTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(facts) = cached.as_ref() {
        return Ok(Arc::clone(facts));
    }
    let pages = man_page_texts(Path::new(DEFAULT_MAN_ROOT), &["1", "8"], MANUAL_PAGES, is_command_page)?;
    let facts = Arc::new(ManualFacts::from_pages(pages));
    *cached = Some(Arc::clone(&facts));
    Ok(facts)
}

/// `count` generated conversations of `split`, seeded by `seed` ([`ferrogpt_chatdata::generate`]).
pub fn chat_examples(split: Split, count: usize, seed: u64) -> Result<Vec<Example>, TrainError> {
    let facts = manual_facts()?;
    Ok(ferrogpt_chatdata::generate(split, count, seed, &facts))
}
