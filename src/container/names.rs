//! Container names: validation and Docker-style random `adjective_surname` names.

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "confident",
    "cool",
    "dazzling",
    "determined",
    "eager",
    "ecstatic",
    "elastic",
    "elegant",
    "epic",
    "fervent",
    "festive",
    "focused",
    "friendly",
    "gallant",
    "gifted",
    "gracious",
    "happy",
    "hopeful",
    "hungry",
    "inspiring",
    "jolly",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "modest",
    "musing",
    "nervous",
    "nifty",
    "nostalgic",
    "optimistic",
    "peaceful",
    "pensive",
    "quirky",
    "relaxed",
    "romantic",
    "serene",
    "sharp",
    "silly",
    "stoic",
    "sweet",
    "tender",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "wizardly",
    "youthful",
    "zealous",
    "zen",
];

/// Scientists and engineers, as Docker's generator uses.
const SURNAMES: &[&str] = &[
    "agnesi",
    "babbage",
    "bardeen",
    "bell",
    "bohr",
    "boole",
    "carson",
    "cerf",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hodgkin",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lamport",
    "liskov",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "morse",
    "newton",
    "noether",
    "pascal",
    "pasteur",
    "perlman",
    "planck",
    "ritchie",
    "shannon",
    "sinoussi",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volta",
    "wilson",
    "wozniak",
    "wright",
    "yalow",
    "zhukovsky",
];

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (we also accept single-character names).
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A random `adjective_surname` for which `taken` is false; a numeric suffix is added when the
/// plain names keep colliding, as Docker does.
pub fn generate(taken: impl Fn(&str) -> bool) -> String {
    for attempt in 0.. {
        let mut bytes = [0u8; 4];
        getrandom::getrandom(&mut bytes).expect("the OS random source is available");
        let adjective = ADJECTIVES[usize::from(bytes[0]) % ADJECTIVES.len()];
        let surname =
            SURNAMES[usize::from(u16::from_le_bytes([bytes[1], bytes[2]])) % SURNAMES.len()];
        let mut name = format!("{adjective}_{surname}");
        if attempt >= 10 {
            name.push_str(&(bytes[3] % 10).to_string());
        }
        if !taken(&name) {
            return name;
        }
    }
    unreachable!("the loop above only ends by returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_follows_docker() {
        assert!(is_valid("web-1.prod_a"));
        assert!(is_valid("x"));
        assert!(!is_valid("_x"));
        assert!(!is_valid("a:b"));
    }

    #[test]
    fn generated_names_avoid_taken_ones() {
        let first = generate(|_| false);
        assert!(is_valid(&first));
        let second = generate(|n| n == first);
        assert_ne!(first, second);
    }
}
