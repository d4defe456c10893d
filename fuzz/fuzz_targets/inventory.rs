//! Every inventory importer: systeminfo in its encodings, hotfix lists,
//! os-release, dpkg status, Cascade JSON.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((_, inventory)) = cascade_core::import::import_inventory("fuzz", data) {
        let _ = inventory.content_hash();
    }
});
