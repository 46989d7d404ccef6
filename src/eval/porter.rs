//! Porter's stemmer as NLTK's `PorterStemmer()` runs it (its default NLTK_EXTENSIONS mode), which
//! is what `rouge-score` stems with. Hand-written because ROUGE must agree with the package to
//! 0.001 on every item and no crate gives these stems: the `porter-stemmer` crate departs from
//! the algorithm (456 of FRANK's 18,415 words differ, "aged" → "ag", "agreement" → "agreem"),
//! and rust-stemmers has Porter2 only. Checked word by word against NLTK on FRANK's vocabulary
//! (`scripts/rouge_agreement.py` checks the scores).
//!
//! Words are lowercase ASCII (`[a-z0-9]`, as ROUGE's tokenizer leaves them).

/// NLTK's irregular forms, looked up before the algorithm.
const POOL: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

fn is_consonant(w: &[u8], i: usize) -> bool {
    match w[i] {
        b'a' | b'e' | b'i' | b'o' | b'u' => false,
        b'y' => i == 0 || !is_consonant(w, i - 1),
        _ => true,
    }
}

/// m in [C](VC)^m[V].
fn measure(w: &[u8]) -> usize {
    let mut m = 0;
    let mut previous_vowel = false;
    for i in 0..w.len() {
        let consonant = is_consonant(w, i);
        if consonant && previous_vowel {
            m += 1;
        }
        previous_vowel = !consonant;
    }
    m
}

fn contains_vowel(w: &[u8]) -> bool {
    (0..w.len()).any(|i| !is_consonant(w, i))
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

/// A rule's condition on the stem left once the suffix is removed.
type Condition = fn(&[u8]) -> bool;

fn positive_measure(stem: &[u8]) -> bool {
    measure(stem) > 0
}

fn measure_over_one(stem: &[u8]) -> bool {
    measure(stem) > 1
}

/// NLTK's `_apply_rule_list`: the first rule whose suffix the word ends with decides; if its
/// condition fails the word is left as it is.
fn apply(word: Vec<u8>, rules: &[(&str, &str, Option<Condition>)]) -> Vec<u8> {
    for (suffix, replacement, condition) in rules {
        if word.ends_with(suffix.as_bytes()) {
            let stem = &word[..word.len() - suffix.len()];
            return if condition.is_none_or(|c| c(stem)) {
                [stem, replacement.as_bytes()].concat()
            } else {
                word
            };
        }
    }
    word
}

fn replace(word: &[u8], suffix: &str, replacement: &str) -> Vec<u8> {
    [&word[..word.len() - suffix.len()], replacement.as_bytes()].concat()
}

fn step1a(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ies") && w.len() == 4 {
        return replace(&w, "ies", "ie");
    }
    apply(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    )
}

fn step1b(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ied") {
        return replace(&w, "ied", if w.len() == 4 { "ie" } else { "i" });
    }
    if w.ends_with(b"eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 {
            [stem, b"ee"].concat()
        } else {
            w
        };
    }
    let Some(stem) = ["ed", "ing"].iter().find_map(|s| {
        w.strip_suffix(s.as_bytes())
            .filter(|stem| contains_vowel(stem))
    }) else {
        return w;
    };
    let stem = stem.to_vec();
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if stem.ends_with(suffix.as_bytes()) {
            return replace(&stem, suffix, replacement);
        }
    }
    if ends_double_consonant(&stem) {
        let last = stem[stem.len() - 1];
        return if matches!(last, b'l' | b's' | b'z') {
            stem
        } else {
            stem[..stem.len() - 1].to_vec()
        };
    }
    if measure(&stem) == 1 && ends_cvc(&stem) {
        return [stem.as_slice(), b"e"].concat();
    }
    stem
}

fn step1c(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"y") {
        let stem = &w[..w.len() - 1];
        if stem.len() > 1 && is_consonant(stem, stem.len() - 1) {
            return [stem, b"i"].concat();
        }
    }
    w
}

fn step2(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"alli") && positive_measure(&w[..w.len() - 4]) {
        return step2(replace(&w, "alli", "al"));
    }
    let pm: Option<Condition> = Some(positive_measure);
    let rules: &[(&str, &str, Option<Condition>)] = &[
        ("ational", "ate", pm),
        ("tional", "tion", pm),
        ("enci", "ence", pm),
        ("anci", "ance", pm),
        ("izer", "ize", pm),
        ("bli", "ble", pm),
        ("alli", "al", pm),
        ("entli", "ent", pm),
        ("eli", "e", pm),
        ("ousli", "ous", pm),
        ("ization", "ize", pm),
        ("ation", "ate", pm),
        ("ator", "ate", pm),
        ("alism", "al", pm),
        ("iveness", "ive", pm),
        ("fulness", "ful", pm),
        ("ousness", "ous", pm),
        ("aliti", "al", pm),
        ("iviti", "ive", pm),
        ("biliti", "ble", pm),
        ("fulli", "ful", pm),
    ];
    // "logi" → "log" when the word without its last three letters has a positive measure.
    let matched = rules.iter().any(|(s, _, _)| w.ends_with(s.as_bytes()));
    if !matched && w.ends_with(b"logi") {
        return if positive_measure(&w[..w.len() - 3]) {
            replace(&w, "logi", "log")
        } else {
            w
        };
    }
    apply(w, rules)
}

fn step3(w: Vec<u8>) -> Vec<u8> {
    let pm: Option<Condition> = Some(positive_measure);
    apply(
        w,
        &[
            ("icate", "ic", pm),
            ("ative", "", pm),
            ("alize", "al", pm),
            ("iciti", "ic", pm),
            ("ical", "ic", pm),
            ("ful", "", pm),
            ("ness", "", pm),
        ],
    )
}

fn step4(w: Vec<u8>) -> Vec<u8> {
    let m1: Option<Condition> = Some(measure_over_one);
    let ion: Option<Condition> =
        Some(|stem: &[u8]| measure(stem) > 1 && matches!(stem.last(), Some(b's' | b't')));
    apply(
        w,
        &[
            ("al", "", m1),
            ("ance", "", m1),
            ("ence", "", m1),
            ("er", "", m1),
            ("ic", "", m1),
            ("able", "", m1),
            ("ible", "", m1),
            ("ant", "", m1),
            ("ement", "", m1),
            ("ment", "", m1),
            ("ent", "", m1),
            ("ion", "", ion),
            ("ou", "", m1),
            ("ism", "", m1),
            ("ate", "", m1),
            ("iti", "", m1),
            ("ous", "", m1),
            ("ive", "", m1),
            ("ize", "", m1),
        ],
    )
}

fn step5a(w: Vec<u8>) -> Vec<u8> {
    if let Some(stem) = w.strip_suffix(b"e") {
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

fn step5b(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ll") && measure(&w[..w.len() - 1]) > 1 {
        return w[..w.len() - 1].to_vec();
    }
    w
}

/// The stem of a lowercase ASCII word.
pub fn stem(word: &str) -> String {
    if let Some((_, s)) = POOL.iter().find(|(w, _)| *w == word) {
        return s.to_string();
    }
    if word.len() <= 2 || !word.is_ascii() {
        return word.to_string();
    }
    let w = word.as_bytes().to_vec();
    let w = step5b(step5a(step4(step3(step2(step1c(step1b(step1a(w))))))));
    String::from_utf8(w).expect("ASCII in, ASCII out")
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn stems_match_nltk() {
        // NLTK 3.10 PorterStemmer() on each.
        for (word, want) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("conflated", "conflat"),
            ("troubled", "troubl"),
            ("sized", "size"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("agreement", "agreement"),
            ("aged", "age"),
            ("always", "alway"),
            ("beautifully", "beauti"),
            ("biology", "biolog"),
            ("assembly", "assembl"),
            ("generalization", "gener"),
            ("dying", "die"),
            ("controll", "control"),
            ("adjustable", "adjust"),
        ] {
            assert_eq!(stem(word), want, "{word}");
        }
    }
}
