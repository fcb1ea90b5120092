//! The template syntax (`{{path}}`, `${path}`, `${{path}}` for a literal `$` before a
//! template), split into literal text and paths. The engine renders what this finds;
//! validation reads the same pieces to check paths, so both agree on what a template is.

/// A piece of a templated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A dotted path, trimmed (`order.total`).
    Path(String),
}

/// Splits a string into literal text and template paths. Unclosed `{{` or `${`, and
/// empty templates, are literal text.
pub fn scan(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    loop {
        let next = [("{{", "}}"), ("${", "}")]
            .into_iter()
            .filter_map(|(open, close)| rest.find(open).map(|at| (at, open, close)))
            .min_by_key(|(at, _, _)| *at);
        let Some((mut at, mut open, mut close)) = next else {
            break;
        };
        // `${{path}}` is a literal `$` before a `{{path}}` template (prices in messages).
        if open == "${" && rest[at + 2..].starts_with('{') {
            (at, open, close) = (at + 1, "{{", "}}");
        }
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(close) else { break };
        let path = after[..end].trim();
        if path.is_empty() {
            literal.push_str(&rest[..at + open.len() + end + close.len()]);
        } else {
            literal.push_str(&rest[..at]);
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Path(path.to_owned()));
        }
        rest = &after[end + close.len()..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    pieces
}

/// The paths a string's templates read, in order.
pub fn paths(text: &str) -> impl Iterator<Item = String> {
    scan(text).into_iter().filter_map(|piece| match piece {
        Piece::Path(path) => Some(path),
        Piece::Text(_) => None,
    })
}
