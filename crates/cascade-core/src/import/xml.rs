//! Helpers over roxmltree that keep line numbers for errors.

use roxmltree::{Document, Node, ParsingOptions};

use super::ImportError;

pub fn parse<'a>(source: &str, text: &'a str) -> Result<Document<'a>, ImportError> {
    let options = ParsingOptions { allow_dtd: false, ..ParsingOptions::default() };
    Document::parse_with_options(text, options).map_err(|e| {
        let pos = e.pos();
        ImportError::Xml { source_name: source.to_owned(), line: pos.row, column: pos.col, message: e.to_string() }
    })
}

pub fn line(node: Node<'_, '_>) -> u32 {
    node.document().text_pos_at(node.range().start).row
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
    name.strip_prefix("b.").or_else(|| name.strip_prefix("l.")).unwrap_or(name)
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
