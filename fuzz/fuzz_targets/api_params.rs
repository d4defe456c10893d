//! The parameter decoding of every API operation: what a caller sends as
//! JSON is accepted or refused as invalid, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for operation in cascade_node::api::operations() {
        let _ = (operation.check)(value.clone());
    }
});
