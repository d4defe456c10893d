//! Rule JSON, then evaluation against an inventory built from the rest.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let Ok(rule) = serde_json::from_slice::<cascade_core::Rule>(&data[..split]) else {
        return;
    };
    let inventory = cascade_core::import::import_inventory("fuzz", data.get(split + 1..).unwrap_or_default())
        .map(|(_, inventory)| inventory)
        .unwrap_or_default();
    let _ = rule.eval(&inventory);
});
