#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrogpt_fuzz::run_in_process_scratch(ferrogpt_fuzz::gguf::run, data));
