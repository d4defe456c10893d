//! Every catalog importer (the format is detected from the bytes).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cascade_core::import::import_catalog("fuzz", data, &cascade_core::import::NoFragments);
});
