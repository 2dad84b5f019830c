#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kura_fuzz::tree_manifest(data));
