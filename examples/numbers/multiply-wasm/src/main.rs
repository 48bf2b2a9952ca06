//! Multiply: one batch item times k. The WASI command ABI: the args object (`{"input":
//! [item, k], ...}`) on stdin, the result on stdout, the log on stderr; a panic or a non-zero
//! exit fails the task with its message.

use std::io::{Read, Write};

use serde_json::{json, Value};

fn main() {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .expect("the args on stdin");
    let args: Value = serde_json::from_str(&text).expect("the args are JSON");
    let result = match args["input"].as_array().map(Vec::as_slice) {
        Some([item, k]) => multiply(item, k),
        _ => {
            eprintln!("multiply takes [item, k], got {}", args["input"]);
            std::process::exit(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &result).expect("the result written");
    stdout.flush().expect("the result written");
}

/// Integers stay integers (as Python's `item * k`); anything else is multiplied as floats.
fn multiply(item: &Value, k: &Value) -> Value {
    match (item.as_i64(), k.as_i64()) {
        (Some(a), Some(b)) => match a.checked_mul(b) {
            Some(product) => json!(product),
            None => json!(a as f64 * b as f64),
        },
        _ => match (item.as_f64(), k.as_f64()) {
            (Some(a), Some(b)) => json!(a * b),
            _ => {
                eprintln!("multiply takes numbers, got {item} and {k}");
                std::process::exit(2);
            }
        },
    }
}
