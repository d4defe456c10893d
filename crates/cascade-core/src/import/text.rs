//! Turning the bytes admins collect into text: UTF-8 with or without BOM,
//! UTF-16 (what `systeminfo > file` writes from PowerShell, sometimes after
//! a line of console output in the OEM code page), the console's OEM code
//! page 850, or Latin-1.

/// Decodes `bytes` as described in the module documentation.
pub fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, true);
    }
    let zeros = bytes.iter().filter(|b| **b == 0).count();
    if zeros * 5 >= bytes.len() && zeros > 0 {
        // UTF-16 without a BOM, possibly after single-byte text ("Please wait
        // while WMIC is being installed."): find where ASCII-with-NULs begins.
        let start = (0..bytes.len().saturating_sub(3))
            .find(|&i| bytes[i] != 0 && bytes[i + 1] == 0 && bytes[i + 2] != 0 && bytes[i + 3] == 0)
            .unwrap_or(0);
        let (prefix, rest) = bytes.split_at(start);
        let rest = rest.strip_prefix(&[0xFF, 0xFE]).unwrap_or(rest);
        let mut text = single_byte(prefix);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&utf16(rest, false));
        return text;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => single_byte(bytes),
    }
}

fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .filter(|c| *c != '\0')
        .collect()
}

/// Code page 850 or Latin-1, whichever makes more letters of the bytes
/// above 127: a console redirect writes the OEM code page, an editor Latin-1.
fn single_byte(bytes: &[u8]) -> String {
    let cp850 = oem_cp::decode_string_complete_table(bytes, &oem_cp::code_table::DECODING_TABLE_CP850);
    let latin1: String = bytes.iter().map(|&b| b as char).collect();
    let letters = |s: &str| s.chars().filter(|c| !c.is_ascii() && c.is_alphabetic()).count();
    if letters(&latin1) > letters(&cp850) {
        latin1
    } else {
        cp850
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(decode(b"\xEF\xBB\xBFabc"), "abc");
        assert_eq!(decode(&[0xFF, 0xFE, b'O', 0, b'S', 0]), "OS");
        assert_eq!(decode(&[b'O', 0, b'S', 0, b' ', 0]), "OS ");
        // "Versión" in Latin-1 and in code page 850.
        assert_eq!(decode(b"Versi\xf3n"), "Versión");
        assert_eq!(decode(b"Versi\xa2n"), "Versión");
        assert_eq!(decode(b"Wait.C\0a\0p\0t\0i\0o\0n\0"), "Wait.\nCaption");
    }
}
