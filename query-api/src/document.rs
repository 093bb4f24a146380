//! Cheap checks on a query before the GraphQL library parses and validates
//! it, so that no document can make either do unbounded work.
//!
//! async-graphql's validation expands every fragment spread where it is
//! used (complexity, depth and field-merging rules): a 1 KB document of 25
//! fragments, each spreading the next twice, asks it for 2^25 visits and
//! never yields. Its parser recurses once per nested list or object value
//! and overflows the stack at a few thousand levels. So, in this order:
//!
//! 1. [`check_text`]: the text is at most `max_bytes` long and nests
//!    brackets at most [`MAX_NESTING`] deep (one linear scan).
//! 2. the library parses it (bounded by 1).
//! 3. [`check_expansion`]: with every fragment spread expanded, counted
//!    once per fragment by memoisation, the document selects at most
//!    `max_fields` fields and directives; it defines at most
//!    [`MAX_FRAGMENTS`] fragments, and no fragment spreads itself.
//!
//! Every accepted document is then validated in time linear in
//! `max_fields`, which the complexity limit bounds anyway (each field
//! counts at least 1), so nothing a client could run before is refused.

use std::collections::HashMap;

use async_graphql::ServerError;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Positioned};

use crate::error::with_code;

/// Deepest nesting of `{`, `[` and `(` a query text may have. The schema's
/// depth limit applies to selections; this one keeps list and object
/// values from overflowing the parser's stack.
pub const MAX_NESTING: usize = 64;

/// Most fragment definitions a document may have.
pub const MAX_FRAGMENTS: usize = 256;

/// Most directives one field, fragment or operation may carry.
pub const MAX_DIRECTIVES: usize = 8;

/// Refuses a text that is too long or nests too deep, before parsing.
pub fn check_text(query: &str, max_bytes: usize) -> Result<(), ServerError> {
    if query.len() > max_bytes {
        return Err(with_code(
            ServerError::new(
                format!(
                    "the query is {} bytes long; at most {max_bytes} are allowed",
                    query.len()
                ),
                None,
            ),
            "QUERY_TOO_LARGE",
        ));
    }
    let depth = nesting(query);
    if depth > MAX_NESTING {
        return Err(with_code(
            ServerError::new(
                format!("the query nests brackets more than {MAX_NESTING} levels deep"),
                None,
            ),
            "QUERY_TOO_DEEP",
        ));
    }
    Ok(())
}

/// The deepest nesting of brackets outside strings and comments, or
/// `MAX_NESTING + 1` as soon as it is deeper.
fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped triple quote inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_NESTING {
                    return deepest;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// What [`check_expansion`] learnt of an accepted document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Selections and directives as written (no expansion): what the
    /// parsed document holds in memory.
    pub nodes: usize,
    /// Selections and directives with every spread expanded.
    pub expanded: usize,
}

/// Refuses a parsed document that expands to more than `max_fields`
/// selections and directives, has too many fragments or directives, or
/// spreads a fragment inside itself.
pub fn check_expansion(doc: &ExecutableDocument, max_fields: usize) -> Result<Shape, ServerError> {
    if doc.fragments.len() > MAX_FRAGMENTS {
        return Err(too_complex(format!(
            "the query defines {} fragments; at most {MAX_FRAGMENTS} are allowed",
            doc.fragments.len()
        )));
    }
    let mut counter = Counter {
        doc,
        memo: HashMap::new(),
        nodes: 0,
    };
    let mut expanded = 0usize;
    for name in doc.fragments.keys() {
        expanded = expanded.saturating_add(counter.fragment(name)?);
    }
    for (_, operation) in doc.operations.iter() {
        let own = directives(&operation.node.directives)?
            .saturating_add(counter.selection_set(&operation.node.selection_set)?);
        counter.nodes = counter.nodes.saturating_add(
            operation.node.directives.len() + operation.node.variable_definitions.len(),
        );
        expanded = expanded.saturating_add(own);
    }
    if expanded > max_fields {
        return Err(too_complex(format!(
            "the query selects more than {max_fields} fields once its fragments are expanded (a fragment counts each time it is spread)"
        )));
    }
    Ok(Shape {
        nodes: counter.nodes,
        expanded,
    })
}

fn too_complex(message: String) -> ServerError {
    with_code(ServerError::new(message, None), "QUERY_TOO_COMPLEX")
}

fn directives(list: &[Positioned<Directive>]) -> Result<usize, ServerError> {
    if list.len() > MAX_DIRECTIVES {
        let pos = list[MAX_DIRECTIVES].pos;
        return Err(with_code(
            ServerError::new(
                format!(
                    "{} directives in one place; at most {MAX_DIRECTIVES} are allowed",
                    list.len()
                ),
                Some(pos),
            ),
            "QUERY_TOO_COMPLEX",
        ));
    }
    Ok(list.len())
}

/// A fragment's expanded size, or that it is being counted (a cycle).
#[derive(Clone, Copy)]
enum Memo {
    InProgress,
    Done(usize),
}

struct Counter<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<&'a Name, Memo>,
    nodes: usize,
}

impl<'a> Counter<'a> {
    fn fragment(&mut self, name: &'a Name) -> Result<usize, ServerError> {
        match self.memo.get(name) {
            Some(Memo::Done(size)) => return Ok(*size),
            Some(Memo::InProgress) => {
                return Err(with_code(
                    ServerError::new(format!("the fragment \"{name}\" spreads itself"), None),
                    "GRAPHQL_VALIDATION_FAILED",
                ));
            }
            None => {}
        }
        // An unknown fragment is the validator's to report; it expands to
        // nothing here.
        let Some((key, fragment)) = self.doc.fragments.get_key_value(name) else {
            return Ok(0);
        };
        self.memo.insert(key, Memo::InProgress);
        let size = directives(&fragment.node.directives)?
            .saturating_add(self.selection_set(&fragment.node.selection_set)?);
        self.nodes = self.nodes.saturating_add(fragment.node.directives.len());
        self.memo.insert(key, Memo::Done(size));
        Ok(size)
    }

    fn selection_set(&mut self, set: &'a Positioned<SelectionSet>) -> Result<usize, ServerError> {
        let mut size = 0usize;
        for selection in &set.node.items {
            let own = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    self.nodes = self
                        .nodes
                        .saturating_add(1 + field.directives.len() + field.arguments.len());
                    1usize
                        .saturating_add(directives(&field.directives)?)
                        .saturating_add(self.selection_set(&field.selection_set)?)
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    self.nodes = self.nodes.saturating_add(1 + inline.directives.len());
                    directives(&inline.directives)?
                        .saturating_add(self.selection_set(&inline.selection_set)?)
                }
                Selection::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    self.nodes = self.nodes.saturating_add(1 + spread.directives.len());
                    directives(&spread.directives)?
                        .saturating_add(self.fragment(&spread.fragment_name.node)?)
                }
            };
            size = size.saturating_add(own);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::code;
    use std::fmt::Write as _;

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).expect("parses")
    }

    /// `query{...F0}` and `levels` fragments, each spreading the next
    /// `fan_out` times.
    fn fragment_bomb(levels: usize, fan_out: usize) -> String {
        let mut query = String::from("query{...F0}");
        for level in 0..levels {
            write!(query, " fragment F{level} on Query{{").expect("write");
            for _ in 0..fan_out {
                write!(query, "...F{} ", level + 1).expect("write");
            }
            query.push('}');
        }
        write!(query, " fragment F{levels} on Query{{__typename}}").expect("write");
        query
    }

    #[test]
    fn a_fragment_bomb_is_refused_in_linear_time() {
        let query = fragment_bomb(25, 2);
        assert!(query.len() < 1_100, "{}", query.len());
        let started = std::time::Instant::now();
        let error = check_expansion(&parse(&query), 5_000).expect_err("a bomb");
        assert_eq!(code(&error), "\"QUERY_TOO_COMPLEX\"");
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        // Wider and deeper shapes saturate instead of overflowing.
        let error = check_expansion(&parse(&fragment_bomb(200, 10)), 5_000).expect_err("a bomb");
        assert_eq!(code(&error), "\"QUERY_TOO_COMPLEX\"");
    }

    #[test]
    fn fragments_count_each_time_they_are_spread() {
        let shape = check_expansion(&parse(&fragment_bomb(3, 2)), 5_000).expect("small");
        // F3 = 1 field; F2 = 2, F1 = 4, F0 = 8; the operation spreads F0 (8).
        assert_eq!(shape.expanded, 1 + 2 + 4 + 8 + 8);
        let error = check_expansion(&parse(&fragment_bomb(3, 2)), 20).expect_err("over");
        assert_eq!(code(&error), "\"QUERY_TOO_COMPLEX\"");
    }

    #[test]
    fn a_fragment_cycle_is_refused_without_looping() {
        let error = check_expansion(
            &parse("query{...A} fragment A on Query{...B} fragment B on Query{...A}"),
            5_000,
        )
        .expect_err("a cycle");
        assert_eq!(code(&error), "\"GRAPHQL_VALIDATION_FAILED\"");
    }

    #[test]
    fn directive_floods_and_fragment_floods_are_refused() {
        let flood = format!("query{{__typename{}}}", " @skip(if:false)".repeat(50));
        let error = check_expansion(&parse(&flood), 5_000).expect_err("flood");
        assert_eq!(code(&error), "\"QUERY_TOO_COMPLEX\"");
        let mut many = String::from("query{__typename}");
        for i in 0..=MAX_FRAGMENTS {
            write!(many, " fragment F{i} on Query{{__typename}}").expect("write");
        }
        let error = check_expansion(&parse(&many), 5_000).expect_err("fragments");
        assert_eq!(code(&error), "\"QUERY_TOO_COMPLEX\"");
    }

    #[test]
    fn deep_brackets_are_refused_before_parsing() {
        let lists = format!(
            "query{{products(first:{}1{})}}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        let error = check_text(&lists, 1 << 20).expect_err("deep");
        assert_eq!(code(&error), "\"QUERY_TOO_DEEP\"");
        let objects = format!("{}{}", "{a".repeat(100), "}".repeat(100));
        assert_eq!(
            code(&check_text(&objects, 1 << 20).expect_err("deep")),
            "\"QUERY_TOO_DEEP\""
        );
        // Brackets in strings, block strings and comments do not count.
        let quoted = format!(
            "query{{search(text:\"{0}\\\"{0}\" other:\"\"\"{0}\\\"\"\"{0}\"\"\"){{a}}}} #{0}\n",
            "[".repeat(100)
        );
        assert!(check_text(&quoted, 1 << 20).is_ok());
    }

    #[test]
    fn long_texts_are_refused_with_their_length() {
        let error = check_text(&"{a}".repeat(100), 200).expect_err("long");
        assert_eq!(code(&error), "\"QUERY_TOO_LARGE\"");
        assert!(error.message.contains("300 bytes"), "{}", error.message);
    }

    #[test]
    fn the_standard_introspection_query_passes() {
        let query = include_str!("../testdata/introspection.graphql");
        check_text(query, 64 * 1024).expect("fits");
        let shape = check_expansion(&parse(query), 5_000).expect("passes");
        assert!(shape.expanded < 1_000, "{shape:?}");
    }
}
