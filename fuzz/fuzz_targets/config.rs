//! The node's configuration file: any text is a configuration or an error
//! naming the key, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cascade_node::config::NodeConfig::parse(std::path::Path::new("fuzz.toml"), text);
    }
});
