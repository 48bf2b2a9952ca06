//! The node input language (reference §2.1): every string leaf of a node's `input` is either a
//! literal or one of the tokens `@`, `#@`, `*@`, `*#@` and `#[…]`.
//!
//! Parsing is pure and total: any JSON value gives either an [`InputExpr`] or a [`spec::Error`]
//! whose message names the node and the input index. Subtrees without tokens collapse into one
//! [`InputExpr::Literal`] so that instantiating a task's input copies them in one go.
//!
//! [`spec::Error`]: super::Error

use serde_json::Value;

use super::Error;

/// How a reference waits for its source (the edge type of the graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sign {
    /// `@X`: wait for all of X, receive its whole output.
    WaitNode,
    /// `#@X`: fan out, one task per element (or per item of a batch X).
    WaitBatch,
    /// `*@X`: one task per item of the batch X, as soon as that item is done.
    WaitAny,
    /// `*#@X`: declared by HKube's parser, never scheduled by its engine; rejected by the graph.
    WaitAnyBatch,
}

impl Sign {
    pub fn prefix(self) -> &'static str {
        match self {
            Sign::WaitNode => "@",
            Sign::WaitBatch => "#@",
            Sign::WaitAny => "*@",
            Sign::WaitAnyBatch => "*#@",
        }
    }
}

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    FlowInput,
    DataSource,
    Node(String),
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::FlowInput => "flowInput",
            Source::DataSource => "dataSource",
            Source::Node(name) => name,
        }
    }
}

/// `<sign><source>[.<path>]`: the path's segments, split on `.`; a segment that is a
/// non-negative integer also indexes arrays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub sign: Sign,
    pub source: Source,
    pub path: Vec<String>,
}

impl Reference {
    /// The reference as the user wrote it, for error messages.
    pub fn text(&self) -> String {
        let mut text = format!("{}{}", self.sign.prefix(), self.source.name());
        for segment in &self.path {
            text.push('.');
            text.push_str(segment);
        }
        text
    }

    /// `flowInput.a.b`: the key HKube uses in `unable to find flowInput.<path>`.
    pub fn dotted(&self) -> String {
        let mut text = self.source.name().to_string();
        for segment in &self.path {
            text.push('.');
            text.push_str(segment);
        }
        text
    }
}

/// One parsed input item (or a part of one).
#[derive(Debug, Clone, PartialEq)]
pub enum InputExpr {
    /// A value passed as is: it contains no token anywhere.
    Literal(Value),
    Ref(Reference),
    /// `#[a,b,1...3]`: the items of a literal batch.
    RawBatch(Vec<Value>),
    Array(Vec<InputExpr>),
    Object(Vec<(String, InputExpr)>),
}

/// The most items a `#[a...b]` range may expand to. A typo such as `#[0...10000000000]` must be
/// an error, not an attempt to allocate the whole range.
pub const MAX_RANGE_ITEMS: u64 = 10_000_000;

impl InputExpr {
    /// Parses one item of a node's `input`. `node` and `index` only serve the error messages.
    pub fn parse(value: &Value, node: &str, index: usize) -> Result<InputExpr, Error> {
        parse_value(value)
            .map_err(|why| Error::new(format!("node \"{node}\" input[{index}]: {why}")))
    }

    /// Whether this expression contains a batch token (`#@…` or `#[…]`), making its node a batch node.
    pub fn is_batch(&self) -> bool {
        let mut found = false;
        self.visit(&mut |leaf| {
            if matches!(
                leaf,
                InputExpr::RawBatch(_)
                    | InputExpr::Ref(Reference {
                        sign: Sign::WaitBatch,
                        ..
                    })
            ) {
                found = true;
            }
        });
        found
    }

    /// Calls `f` on every reference, depth first, in document order.
    pub fn for_each_ref<'a>(&'a self, f: &mut impl FnMut(&'a Reference)) {
        self.visit(&mut |leaf| {
            if let InputExpr::Ref(reference) = leaf {
                f(reference)
            }
        });
    }

    /// Calls `f` on every leaf (literal, reference, raw batch), depth first, in document order.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a InputExpr)) {
        match self {
            InputExpr::Array(items) => items.iter().for_each(|item| item.visit(f)),
            InputExpr::Object(fields) => fields.iter().for_each(|(_, item)| item.visit(f)),
            leaf => f(leaf),
        }
    }

    /// Builds the value a task receives: literals are copied, every other leaf is asked of
    /// `leaf_value`, in document order.
    pub fn instantiate(&self, leaf_value: &mut impl FnMut(&InputExpr) -> Value) -> Value {
        match self {
            InputExpr::Literal(value) => value.clone(),
            InputExpr::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.instantiate(leaf_value))
                    .collect(),
            ),
            InputExpr::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, item)| (key.clone(), item.instantiate(leaf_value)))
                    .collect(),
            ),
            leaf => leaf_value(leaf),
        }
    }
}

fn parse_value(value: &Value) -> Result<InputExpr, String> {
    match value {
        Value::String(text) => parse_string(text),
        Value::Array(items) => {
            let parsed = items
                .iter()
                .map(parse_value)
                .collect::<Result<Vec<_>, _>>()?;
            if parsed
                .iter()
                .all(|item| matches!(item, InputExpr::Literal(_)))
            {
                Ok(InputExpr::Literal(value.clone()))
            } else {
                Ok(InputExpr::Array(parsed))
            }
        }
        Value::Object(fields) => {
            let parsed = fields
                .iter()
                .map(|(key, item)| parse_value(item).map(|expr| (key.clone(), expr)))
                .collect::<Result<Vec<_>, _>>()?;
            if parsed
                .iter()
                .all(|(_, item)| matches!(item, InputExpr::Literal(_)))
            {
                Ok(InputExpr::Literal(value.clone()))
            } else {
                Ok(InputExpr::Object(parsed))
            }
        }
        other => Ok(InputExpr::Literal(other.clone())),
    }
}

fn parse_string(text: &str) -> Result<InputExpr, String> {
    // The prefixes are tried longest first: "*#@" before "*@", "#@" before "@".
    const SIGNS: [Sign; 4] = [
        Sign::WaitAnyBatch,
        Sign::WaitBatch,
        Sign::WaitAny,
        Sign::WaitNode,
    ];
    for sign in SIGNS {
        if let Some(rest) = text.strip_prefix(sign.prefix()) {
            return parse_reference(sign, rest, text).map(InputExpr::Ref);
        }
    }
    if let Some(body) = text.strip_prefix("#[") {
        return parse_raw_batch(body, text).map(InputExpr::RawBatch);
    }
    if text.starts_with("$$") {
        return Err(format!(
            "\"{text}\" starts with \"$$\", which is reserved for storage references; \
             write the value inside an object or add a leading character"
        ));
    }
    Ok(InputExpr::Literal(Value::String(text.to_string())))
}

fn parse_reference(sign: Sign, rest: &str, text: &str) -> Result<Reference, String> {
    let mut parts = rest.split('.');
    let object = parts.next().unwrap_or_default();
    if object.is_empty() {
        return Err(format!(
            "\"{text}\" names no node: write \"{}NodeName\" or \"{}flowInput.key\"",
            sign.prefix(),
            sign.prefix()
        ));
    }
    let path: Vec<String> = parts.map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!(
            "\"{text}\" has an empty path segment: segments are separated by single dots, as in \"{}{}.a.0\"",
            sign.prefix(),
            object
        ));
    }
    let source = match object {
        "flowInput" => Source::FlowInput,
        "dataSource" => Source::DataSource,
        node => Source::Node(node.to_string()),
    };
    Ok(Reference { sign, source, path })
}

/// `#[a, b, 1...3]`: whitespace removed, comma separated; `a...b` with integer bounds expands to
/// the integers from a to b inclusive (descending when a > b); every other item stays a string,
/// as in HKube (`#[1,2]` gives the strings "1" and "2").
fn parse_raw_batch(body: &str, text: &str) -> Result<Vec<Value>, String> {
    let Some(body) = body.strip_suffix(']') else {
        return Err(format!(
            "raw batch \"{text}\" must end with \"]\", as in \"#[1...3]\" or \"#[a,b]\""
        ));
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Ok(Vec::new());
    }
    let mut items = Vec::new();
    for item in compact.split(',') {
        match parse_range(item) {
            Some((from, to)) => {
                // Saturating: i64::MIN...i64::MAX spans 2^64 items, one more than u64 holds.
                let count = from.abs_diff(to).saturating_add(1);
                if count > MAX_RANGE_ITEMS || items.len() as u64 + count > MAX_RANGE_ITEMS {
                    return Err(format!(
                        "raw batch \"{text}\" expands to more than {MAX_RANGE_ITEMS} items; \
                         pass large batches through flowInput and \"#@flowInput.key\""
                    ));
                }
                if from <= to {
                    items.extend((from..=to).map(Value::from));
                } else {
                    items.extend((to..=from).rev().map(Value::from));
                }
            }
            None => items.push(Value::String(item.to_string())),
        }
    }
    Ok(items)
}

fn parse_range(item: &str) -> Option<(i64, i64)> {
    let (from, to) = item.split_once("...")?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<InputExpr, String> {
        InputExpr::parse(&value, "A", 0).map_err(|e| e.to_string())
    }

    fn node_ref(sign: Sign, node: &str, path: &[&str]) -> InputExpr {
        InputExpr::Ref(Reference {
            sign,
            source: Source::Node(node.into()),
            path: path.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn signs_are_told_apart_longest_first() {
        assert_eq!(parse(json!("@B")), Ok(node_ref(Sign::WaitNode, "B", &[])));
        assert_eq!(
            parse(json!("#@B.x")),
            Ok(node_ref(Sign::WaitBatch, "B", &["x"]))
        );
        assert_eq!(
            parse(json!("*@B.0")),
            Ok(node_ref(Sign::WaitAny, "B", &["0"]))
        );
        assert_eq!(
            parse(json!("*#@B")),
            Ok(node_ref(Sign::WaitAnyBatch, "B", &[]))
        );
    }

    #[test]
    fn flow_input_and_paths() {
        let parsed = parse(json!("@flowInput.files.links.1")).unwrap();
        let InputExpr::Ref(reference) = parsed else {
            panic!("not a reference")
        };
        assert_eq!(reference.source, Source::FlowInput);
        assert_eq!(reference.path, vec!["files", "links", "1"]);
        assert_eq!(reference.dotted(), "flowInput.files.links.1");
    }

    #[test]
    fn words_and_numbers_are_literals() {
        for value in [
            json!("flowInput"),
            json!(42),
            json!(null),
            json!("a@b"),
            json!({"k": [1, "x"]}),
        ] {
            assert_eq!(parse(value.clone()), Ok(InputExpr::Literal(value)));
        }
    }

    #[test]
    fn raw_batch_keeps_strings_and_expands_ranges() {
        assert_eq!(
            parse(json!("#[1,2, 5...6, x]")),
            Ok(InputExpr::RawBatch(vec![
                json!("1"),
                json!("2"),
                json!(5),
                json!(6),
                json!("x")
            ]))
        );
        assert_eq!(
            parse(json!("#[3...1]")),
            Ok(InputExpr::RawBatch(vec![json!(3), json!(2), json!(1)]))
        );
        assert_eq!(parse(json!("#[]")), Ok(InputExpr::RawBatch(vec![])));
    }

    #[test]
    fn nested_tokens_keep_their_place() {
        let parsed = parse(json!({"cfg": {"v": "#@flowInput.v"}, "c": 1})).unwrap();
        assert!(parsed.is_batch());
        let value = parsed.instantiate(&mut |_| json!(10));
        assert_eq!(value, json!({"cfg": {"v": 10}, "c": 1}));
    }

    #[test]
    fn bad_strings_say_where_and_how() {
        assert_eq!(
            parse(json!("@")).unwrap_err(),
            "node \"A\" input[0]: \"@\" names no node: write \"@NodeName\" or \"@flowInput.key\""
        );
        assert!(parse(json!("@A..x"))
            .unwrap_err()
            .contains("empty path segment"));
        assert!(parse(json!("#[1,2"))
            .unwrap_err()
            .contains("must end with \"]\""));
        assert!(parse(json!("$$guid")).unwrap_err().contains("reserved"));
        assert!(parse(json!("#[0...100000000000]"))
            .unwrap_err()
            .contains("more than"));
        assert!(
            parse(json!("#[9223372036854775807...-9223372036854775808]"))
                .unwrap_err()
                .contains("more than")
        );
    }
}
