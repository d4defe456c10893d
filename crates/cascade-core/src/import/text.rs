//! Turning the bytes admins collect into text: UTF-8 with or without BOM,
//! UTF-16 (what `systeminfo > file` writes from PowerShell, sometimes after
//! a line of console output in the OEM code page), or the legacy code page
//! of the Windows display language: the console's (OEM) code page when
//! redirected from `cmd`, the ANSI one from other tools. Which code page is
//! chosen by evidence in the text: the words of `systeminfo` in that
//! language first, then how well the bytes read as that language's script.

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

/// The legacy code pages Windows writes text in, by display language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodePage {
    /// Simplified Chinese (CP936).
    Gbk,
    /// Traditional Chinese (CP950).
    Big5,
    /// Japanese (CP932).
    ShiftJis,
    /// Korean (CP949).
    Uhc,
    /// Cyrillic, console (CP866).
    Cp866,
    /// Cyrillic, ANSI (CP1251).
    Cp1251,
    /// Central European, console (CP852).
    Cp852,
    /// Central European, ANSI (CP1250).
    Cp1250,
    /// Western European, console (CP850).
    Cp850,
    /// United States, console (CP437).
    Cp437,
    /// Western European, ANSI (CP1252; Latin-1 where they agree).
    Cp1252,
}

const CODE_PAGES: [CodePage; 11] = [
    CodePage::Gbk,
    CodePage::Big5,
    CodePage::ShiftJis,
    CodePage::Uhc,
    CodePage::Cp866,
    CodePage::Cp1251,
    CodePage::Cp852,
    CodePage::Cp1250,
    CodePage::Cp850,
    CodePage::Cp437,
    CodePage::Cp1252,
];

/// Words `systeminfo` and `wmic` print in the languages whose code pages
/// are above (labels are translated; values such as the version are not).
const EVIDENCE: &[&str] = &[
    // Simplified Chinese
    "主机名",
    "OS 名称",
    "OS 版本",
    "OS 制造商",
    "系统类型",
    "修补程序",
    "物理内存总量",
    "系统区域设置",
    // Traditional Chinese
    "主機名稱",
    "作業系統名稱",
    "作業系統版本",
    "系統類型",
    "實體記憶體總計",
    // Japanese
    "ホスト名",
    "OS 名",
    "OS バージョン",
    "OS 製造元",
    "システムの種類",
    "ホットフィックス",
    "物理メモリの合計",
    // Korean
    "호스트 이름",
    "OS 이름",
    "OS 버전",
    "시스템 종류",
    "핫픽스",
    "총 실제 메모리",
    // Russian
    "Имя узла",
    "Название ОС",
    "Версия ОС",
    "Изготовитель ОС",
    "Тип системы",
    "Исправление",
    // Czech, Polish, Hungarian, Slovak
    "Název hostitele",
    "Název operačního systému",
    "Verze operačního systému",
    "Typ systému",
    "Nazwa hosta",
    "Nazwa systemu operacyjnego",
    "Wersja systemu operacyjnego",
    "Állomásnév",
    "Operációs rendszer neve",
    "Operációs rendszer verziója",
    "Názov hostiteľa",
    // Western European
    "Versión del sistema operativo",
    "Nom du système d'exploitation",
    "Version du système",
    "Betriebssystemversion",
    "Versão do sistema operacional",
    "Ürün",
    "Système",
];

impl CodePage {
    fn decode(self, bytes: &[u8]) -> Option<String> {
        let strict = |enc: &'static encoding_rs::Encoding| {
            enc.decode_without_bom_handling_and_without_replacement(bytes)
                .map(|c| c.into_owned())
        };
        match self {
            CodePage::Gbk => strict(encoding_rs::GBK),
            CodePage::Big5 => strict(encoding_rs::BIG5),
            CodePage::ShiftJis => strict(encoding_rs::SHIFT_JIS),
            CodePage::Uhc => strict(encoding_rs::EUC_KR),
            CodePage::Cp866 => strict(encoding_rs::IBM866),
            CodePage::Cp1251 => strict(encoding_rs::WINDOWS_1251),
            CodePage::Cp1250 => strict(encoding_rs::WINDOWS_1250),
            CodePage::Cp1252 => strict(encoding_rs::WINDOWS_1252),
            CodePage::Cp852 => Some(oem_cp::decode_string_complete_table(
                bytes,
                &oem_cp::code_table::DECODING_TABLE_CP852,
            )),
            CodePage::Cp850 => Some(oem_cp::decode_string_complete_table(
                bytes,
                &oem_cp::code_table::DECODING_TABLE_CP850,
            )),
            CodePage::Cp437 => Some(oem_cp::decode_string_complete_table(
                bytes,
                &oem_cp::code_table::DECODING_TABLE_CP437,
            )),
        }
    }

    /// Whether a decoded character is a letter of this code page's languages.
    fn native(self, c: char) -> bool {
        let u = c as u32;
        match self {
            // Ideographs, CJK punctuation and full-width forms.
            CodePage::Gbk | CodePage::Big5 => {
                (0x4E00..=0x9FFF).contains(&u) || (0x3000..=0x303F).contains(&u) || (0xFF00..=0xFFEF).contains(&u)
            }
            CodePage::ShiftJis => {
                (0x3000..=0x30FF).contains(&u) || (0x4E00..=0x9FFF).contains(&u) || (0xFF00..=0xFFEF).contains(&u)
            }
            CodePage::Uhc => {
                (0xAC00..=0xD7A3).contains(&u) || (0x3000..=0x303F).contains(&u) || (0xFF00..=0xFFEF).contains(&u)
            }
            CodePage::Cp866 | CodePage::Cp1251 => (0x0400..=0x04FF).contains(&u),
            CodePage::Cp852 | CodePage::Cp1250 => {
                matches!(
                    c,
                    'á' | 'é'
                        | 'í'
                        | 'ó'
                        | 'ú'
                        | 'ý'
                        | 'ö'
                        | 'ü'
                        | 'ä'
                        | 'ô'
                        | 'Á'
                        | 'É'
                        | 'Í'
                        | 'Ó'
                        | 'Ú'
                        | 'Ö'
                        | 'Ü'
                ) || (0x0100..=0x017F).contains(&u)
            }
            CodePage::Cp850 | CodePage::Cp437 | CodePage::Cp1252 => (0x00C0..=0x00FF).contains(&u) && c.is_alphabetic(),
        }
    }

    /// For double-byte code pages: how many characters sit in the common
    /// part of the code page (everyday characters) and how many outside it.
    /// Single-byte text read as double-byte lands mostly outside.
    fn common_pairs(self, bytes: &[u8]) -> (i64, i64) {
        let (mut common, mut rare) = (0, 0);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let single = b < 0x80 || (self == CodePage::ShiftJis && (0xA1..=0xDF).contains(&b));
            if single {
                i += 1;
                continue;
            }
            let t = bytes.get(i + 1).copied().unwrap_or(0);
            let usual = match self {
                CodePage::Gbk => (0xA1..=0xF7).contains(&b) && (0xA1..=0xFE).contains(&t),
                CodePage::Big5 => (0xA1..=0xC6).contains(&b),
                CodePage::ShiftJis => (0x81..=0x9F).contains(&b),
                CodePage::Uhc => (0xA1..=0xC8).contains(&b) && (0xA1..=0xFE).contains(&t),
                _ => true,
            };
            if usual {
                common += 1;
            } else {
                rare += 1;
            }
            i += 2;
        }
        (common, rare)
    }

    fn latin(self) -> bool {
        matches!(
            self,
            CodePage::Cp852 | CodePage::Cp1250 | CodePage::Cp850 | CodePage::Cp437 | CodePage::Cp1252
        )
    }

    fn double_byte(self) -> bool {
        matches!(
            self,
            CodePage::Gbk | CodePage::Big5 | CodePage::ShiftJis | CodePage::Uhc
        )
    }
}

/// Decodes text in a legacy code page, choosing the code page by evidence.
fn single_byte(bytes: &[u8]) -> String {
    let mut best: Option<(i64, String)> = None;
    for page in CODE_PAGES {
        let Some(text) = page.decode(bytes) else {
            continue;
        };
        let words = EVIDENCE.iter().filter(|w| text.contains(*w)).count() as i64;
        let (mut native, mut foreign) = (0i64, 0i64);
        let chars: Vec<char> = text.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c.is_ascii() {
                continue;
            }
            // Cyrillic and East Asian words are not spelt with Latin letters
            // inside them; accented Latin letters are.
            let inside_latin_word = !page.latin()
                && (i > 0 && chars[i - 1].is_ascii_alphabetic()
                    || chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic()));
            if page.native(c) && !inside_latin_word {
                native += 1;
            } else if c.is_alphanumeric() || !c.is_whitespace() {
                foreign += 1;
            }
        }
        let mut score = words * 1_000_000 + native * 4 - foreign * 8;
        if page.double_byte() {
            let (common, rare) = page.common_pairs(bytes);
            score += common - rare * 16;
        }
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, text));
        }
    }
    best.map(|(_, t)| t)
        .unwrap_or_else(|| bytes.iter().map(|&b| b as char).collect())
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
