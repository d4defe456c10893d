//! Helpers over roxmltree that keep line numbers for errors.

use roxmltree::{Document, Node, ParsingOptions};

use super::{ImportError, MAX_FIELD_BYTES, MAX_XML_DEPTH};

/// Parses `text`, refusing elements nested deeper than [`MAX_XML_DEPTH`]
/// and a text or attribute value longer than [`MAX_FIELD_BYTES`].
pub fn parse<'a>(source: &str, text: &'a str) -> Result<Document<'a>, ImportError> {
    let doc = parse_unchecked(source, text)?;
    check_bounds(source, &doc)?;
    Ok(doc)
}

/// Every text and attribute value is a field some importer may keep, and
/// every importer walks elements: one pass over the document bounds them
/// all, naming the line and element. The pass itself does not recurse.
fn check_bounds(source: &str, doc: &Document<'_>) -> Result<(), ImportError> {
    let refuse = |node: Node<'_, '_>, element: Node<'_, '_>, message: String| ImportError::Element {
        source_name: source.to_owned(),
        line: line(node),
        element: qualified_name(element),
        message,
    };
    // Element depth by node id; nodes come parents first.
    let mut depths: Vec<usize> = Vec::new();
    for node in doc.descendants() {
        let parent_depth = node
            .parent()
            .and_then(|p| depths.get(p.id().get_usize()).copied())
            .unwrap_or(0);
        let depth = parent_depth + usize::from(node.is_element());
        let id = node.id().get_usize();
        if depths.len() <= id {
            depths.resize(id + 1, 0);
        }
        depths[id] = depth;
        if depth > MAX_XML_DEPTH {
            return Err(refuse(
                node,
                node,
                format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
            ));
        }
        if let Some(text) = node.text().filter(|_| node.is_text())
            && text.len() > MAX_FIELD_BYTES
        {
            return Err(refuse(
                node,
                node.parent_element().unwrap_or(node),
                format!(
                    "a text of {} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes",
                    text.len()
                ),
            ));
        }
        if let Some(attribute) = node.attributes().find(|a| a.value().len() > MAX_FIELD_BYTES) {
            return Err(refuse(
                node,
                node,
                format!(
                    "attribute {} is {} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes",
                    attribute.name(),
                    attribute.value().len()
                ),
            ));
        }
    }
    Ok(())
}

fn parse_unchecked<'a>(source: &str, text: &'a str) -> Result<Document<'a>, ImportError> {
    let options = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).map_err(|e| {
        if matches!(
            e,
            roxmltree::Error::UnclosedRootNode | roxmltree::Error::UnexpectedEndOfStream
        ) {
            // roxmltree points at the root's start; the problem is the end.
            let line = text.lines().count().max(1) as u32;
            let column = text.lines().last().map_or(1, |l| l.chars().count() as u32 + 1);
            let message = match innermost_open(text) {
                Some((name, opened)) => {
                    format!("the text ends inside <{name}> (opened at line {opened}): truncated?")
                }
                None => "the text ends before the root element is closed: truncated?".to_owned(),
            };
            return ImportError::Xml {
                source_name: source.to_owned(),
                line,
                column,
                message,
            };
        }
        let pos = e.pos();
        ImportError::Xml {
            source_name: source.to_owned(),
            line: pos.row,
            column: pos.col,
            message: e.to_string(),
        }
    })
}

/// Line numbers for many nodes of one document. `line` counts from the
/// start of the text each time, which is quadratic when every record of a
/// large document asks.
pub struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Lines { starts }
    }

    pub fn of(&self, node: Node<'_, '_>) -> u32 {
        self.starts.partition_point(|start| *start <= node.range().start) as u32
    }
}

pub fn line(node: Node<'_, '_>) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

/// The element's name as the file writes it, with its prefix (`lar:Not`).
pub fn qualified_name(node: Node<'_, '_>) -> String {
    let name = node.tag_name().name();
    match node.tag_name().namespace().and_then(|uri| node.lookup_prefix(uri)) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}:{name}"),
        _ => name.to_owned(),
    }
}

pub fn element_error(source: &str, node: Node<'_, '_>, message: impl Into<String>) -> ImportError {
    ImportError::Element {
        source_name: source.to_owned(),
        line: line(node),
        element: node.tag_name().name().to_owned(),
        message: message.into(),
    }
}

/// The local name, without a namespace and without the `b.` prefix that
/// WSUS client fragments use for base rules.
pub fn local<'a>(node: Node<'a, '_>) -> &'a str {
    let name = node.tag_name().name();
    name.strip_prefix("b.")
        .or_else(|| name.strip_prefix("l."))
        .unwrap_or(name)
}

pub fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.is_element() && local(*c) == name)
}

pub fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| c.is_element() && local(*c) == name)
}

pub fn text<'a>(node: Option<Node<'a, '_>>) -> &'a str {
    node.and_then(|n| n.text()).map(str::trim).unwrap_or("")
}

pub fn descendant<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|c| c.is_element() && local(*c) == name)
}

/// The innermost element still open at the end of `text`, with the line it
/// was opened on: what a truncated document was in the middle of.
fn innermost_open(text: &str) -> Option<(String, usize)> {
    let mut stack: Vec<(&str, usize)> = Vec::new();
    let mut line = 1;
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        line += rest[..at].matches('\n').count();
        rest = &rest[at..];
        let skip_to = |s: &str, end: &str| s.find(end).map(|i| i + end.len());
        let consumed = if rest.starts_with("<!--") {
            skip_to(rest, "-->")
        } else if rest.starts_with("<![CDATA[") {
            skip_to(rest, "]]>")
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            skip_to(rest, ">")
        } else {
            let end = rest.find('>');
            if let Some(end) = end {
                let tag = &rest[1..end];
                let name_end = tag.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(tag.len());
                if let Some(closing) = tag.strip_prefix('/') {
                    let closing = closing.trim();
                    if let Some(pos) = stack.iter().rposition(|(n, _)| *n == closing) {
                        stack.truncate(pos);
                    }
                } else if !tag.ends_with('/') {
                    stack.push((&tag[..name_end], line));
                }
            } else if !rest.starts_with("</") {
                let name_end = rest[1..]
                    .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
                    .map_or(rest.len(), |i| i + 1);
                stack.push((&rest[1..name_end], line));
            }
            end.map(|e| e + 1)
        };
        let Some(consumed) = consumed else { break };
        line += rest[..consumed].matches('\n').count();
        rest = &rest[consumed..];
    }
    stack
        .last()
        .filter(|(n, _)| !n.is_empty())
        .map(|(n, l)| ((*n).to_owned(), *l))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_agree_with_line() {
        let text = "<a>\n<b x=\"1\"/>\n\n  <c>t\nu</c><d/>\n</a>\n";
        let doc = super::parse("t.xml", text).unwrap();
        let lines = super::Lines::new(text);
        for node in doc.descendants() {
            assert_eq!(lines.of(node), super::line(node), "{node:?}");
        }
    }

    #[test]
    fn innermost_open_element() {
        let text = "<?xml version=\"1.0\"?>\n<a x=\"1\">\n  <b/>\n  <c>\n    <d>text</d>\n    <e attr";
        assert_eq!(super::innermost_open(text), Some(("e".to_owned(), 6)));
        assert_eq!(super::innermost_open("<a>\n<b>\n</b>"), Some(("a".to_owned(), 1)));
    }
}
