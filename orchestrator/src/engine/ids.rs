//! HKube's identifiers: random strings over `[0-9a-z]` (reference §3.3).

use rand::Rng;

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn random_chars<const N: usize>(rng: &mut impl Rng) -> [u8; N] {
    let mut out = [0u8; N];
    for byte in &mut out {
        *byte = ALPHABET[rng.random_range(0..ALPHABET.len())];
    }
    out
}

fn random_string<const N: usize>() -> String {
    let chars: [u8; N] = random_chars(&mut rand::rng());
    chars.iter().map(|&b| b as char).collect()
}

/// A job id: 12 characters.
pub fn job_id() -> String {
    random_string::<12>()
}

/// An algorithm or pipeline version id: 10 characters.
pub fn version_id() -> String {
    random_string::<10>()
}

/// A build id: HKube's `<algorithmName>-<6 characters>`.
pub fn build_id(algorithm: &str) -> String {
    format!("{algorithm}-{}", random_string::<6>())
}

/// A task id: 8 characters, kept inline (a million tasks must not mean a million allocations).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId([u8; 8]);

impl TaskId {
    pub fn random(rng: &mut impl Rng) -> TaskId {
        TaskId(random_chars(rng))
    }

    /// A task id read back (from a journal): 8 characters of `[0-9a-z]`.
    pub fn parse(text: &str) -> Option<TaskId> {
        let bytes: [u8; 8] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| ALPHABET.contains(b))
            .then_some(TaskId(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII from ALPHABET.
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }
}

impl std::fmt::Debug for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = job_id();
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| ALPHABET.contains(&b)));
        let version = version_id();
        assert_eq!(version.len(), 10);
        assert!(version.bytes().all(|b| ALPHABET.contains(&b)));
        let task = TaskId::random(&mut rand::rng());
        assert_eq!(task.as_str().len(), 8);
    }
}
