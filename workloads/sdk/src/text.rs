//! Prompt text shared by workloads: the seed harness's synthetic document,
//! its size rules, and the raw Llama-3 completion template.
//!
//! Everything here is pure, so ports to other languages can be checked
//! against these functions for the same seed. Sizing to an exact token count
//! is left to the host ([`crate::host::fit_to_tokens`]) because only the host
//! knows the tokenizer.

use crate::rng::SplitMix64;

/// Topics of a synthetic document.
pub const TOPICS: [&str; 10] = [
    "request scheduling",
    "token budget policy",
    "storage queue behavior",
    "cache eviction workflow",
    "fault tolerance and retries",
    "tenant isolation controls",
    "latency observability",
    "service degradation playbook",
    "throughput stabilization plan",
    "maintenance and incident response",
];

/// Sentence subjects of a section bullet.
pub const SUBJECTS: [&str; 10] = [
    "The runtime coordinator",
    "The storage planner",
    "The batch scheduler",
    "The policy engine",
    "The telemetry worker",
    "The frontend router",
    "The cache reconciler",
    "The replay evaluator",
    "The token allocator",
    "The audit process",
];

/// Verbs of a section bullet.
pub const ACTIONS: [&str; 10] = [
    "records",
    "re-evaluates",
    "normalizes",
    "aggregates",
    "describes",
    "compares",
    "escalates",
    "bounds",
    "prioritizes",
    "documents",
];

/// Closing clauses of a section bullet.
pub const QUALIFIERS: [&str; 10] = [
    "under bursty traffic",
    "during long-context prompts",
    "for mixed tenant load",
    "while preserving deterministic replay",
    "with explicit timeout guards",
    "while reducing tail latency spikes",
    "without changing request semantics",
    "under constrained memory tiers",
    "before and after eviction pressure",
    "for compatibility-mode file I/O",
];

/// What [`crate::host::fit_to_tokens`] repeats to extend a document that is
/// short of its target; the seed harness's filler phrase.
pub const FILLER: &str = " deterministic checkpoint replay baseline cache latency throughput \
                          scheduler queue storage observability policy appendix";

/// Opens a raw Llama-3 user turn.
pub const LLAMA3_USER_PREFIX: &str =
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n";

/// Closes the user turn and opens the assistant's.
pub const LLAMA3_ASSISTANT_PREFIX: &str =
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

/// Starts every raw Llama-3 prompt.
pub const LLAMA3_BEGIN: &str = "<|begin_of_text|>";

/// Opens the assistant's turn after the last message.
pub const LLAMA3_ASSISTANT_HEADER: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

/// Target sizes the `short` rule prefers, as in the seed.
pub const SHORT_CHOICES: [u32; 5] = [512, 768, 1024, 1536, 2048];

/// Target sizes the `long` rule prefers, as in the seed.
pub const LONG_CHOICES: [u32; 5] = [8192, 12288, 16384, 24576, 32768];

/// The seed harness's prompt size classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSet {
    Short,
    Long,
    /// Short or long per prompt, by a fair coin.
    Mixed,
}

impl SizeSet {
    /// `short`, `long` or `mixed`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "short" => Some(Self::Short),
            "long" => Some(Self::Long),
            "mixed" => Some(Self::Mixed),
            _ => None,
        }
    }
}

/// The size class (`"short"` or `"long"`) and target token count of the
/// next prompt, by the seed's rules.
///
/// Draws: `Mixed` first draws `next_f64() < 0.5` (short). Then, when some of
/// the class's preferred sizes ([`SHORT_CHOICES`], [`LONG_CHOICES`]) fall in
/// its range, `pick` among those (ascending); otherwise `range_u32(min, max)`.
pub fn choose_target(
    set: SizeSet,
    rng: &mut SplitMix64,
    short_range: (u32, u32),
    long_range: (u32, u32),
) -> (&'static str, u32) {
    let short = match set {
        SizeSet::Short => true,
        SizeSet::Long => false,
        SizeSet::Mixed => rng.next_f64() < 0.5,
    };
    if short {
        ("short", sample_target(rng, &SHORT_CHOICES, short_range))
    } else {
        ("long", sample_target(rng, &LONG_CHOICES, long_range))
    }
}

fn sample_target(rng: &mut SplitMix64, preferred: &[u32], (min, max): (u32, u32)) -> u32 {
    let in_range: Vec<u32> = preferred
        .iter()
        .copied()
        .filter(|v| (min..=max).contains(v))
        .collect();
    if in_range.is_empty() {
        rng.range_u32(min, max)
    } else {
        *rng.pick(&in_range)
    }
}

/// `user_text` as a single-turn raw Llama-3 prompt for `/v1/completions`.
///
/// Size `user_text` before calling this: cutting or padding the result would
/// damage the template, which was a defect of the seed harness.
pub fn llama3_completion_prompt(user_text: &str) -> String {
    [LLAMA3_USER_PREFIX, user_text, LLAMA3_ASSISTANT_PREFIX].concat()
}

/// The number of words a document for `target_tokens` grows to before it is
/// sized by the host: `max(220, floor(target_tokens * 66 / 100))`.
///
/// English prose runs at about 1.2 to 1.4 tokens per word, so this lands
/// near the target and the host's fitting only trims or pads a little.
/// Integer arithmetic, unlike the seed's `int(target * 0.66)`, so every
/// language computes the same bound.
pub fn document_min_words(target_tokens: u32) -> usize {
    let scaled = u64::from(target_tokens) * 66 / 100;
    (scaled as usize).max(220)
}

/// A synthetic document of at least [`document_min_words`] words.
///
/// Layout, one item per line (`\n`-separated, ending with a newline):
///
/// ```text
/// Document ID: <doc_id>
/// Topic: <topic>
/// Instruction: summarize key controls, constraints, and ordered actions in clear prose.
/// <empty>
/// Section k: <topic> operating notes           k = 1, 2, ...
/// k.i <subject> <action> the <topic> workflow <qualifier>, tracks ...   i = 1..=6 (k odd) or 7 (k even)
/// Checklist k: verify ordering, compare deltas, reconcile counters, and persist trace evidence.
/// <empty>
/// ```
///
/// Sections are appended while the word count (runs of non-whitespace, over
/// all lines so far) is below the bound. Each bullet draws, in this order,
/// `pick(SUBJECTS)`, `pick(ACTIONS)`, `pick(QUALIFIERS)` from `rng`; nothing
/// else is drawn. `doc_id` and `topic` should be ASCII so that every
/// language's notion of whitespace agrees.
pub fn synthetic_document(
    rng: &mut SplitMix64,
    doc_id: &str,
    topic: &str,
    target_tokens: u32,
) -> String {
    let min_words = document_min_words(target_tokens);
    let mut lines: Vec<String> = vec![
        format!("Document ID: {doc_id}"),
        format!("Topic: {topic}"),
        "Instruction: summarize key controls, constraints, and ordered actions in clear prose."
            .to_string(),
        String::new(),
    ];
    let mut words = lines.iter().map(|l| word_count(l)).sum::<usize>();
    let mut section = 1u32;
    while words < min_words {
        let start = lines.len();
        push_section(&mut lines, rng, section, topic);
        words += lines[start..].iter().map(|l| word_count(l)).sum::<usize>();
        section += 1;
    }
    lines.join("\n")
}

fn push_section(lines: &mut Vec<String>, rng: &mut SplitMix64, section: u32, topic: &str) {
    lines.push(format!("Section {section}: {topic} operating notes"));
    let bullets = if section.is_multiple_of(2) { 7 } else { 6 };
    for index in 1..=bullets {
        let subject = rng.pick(&SUBJECTS);
        let action = rng.pick(&ACTIONS);
        let qualifier = rng.pick(&QUALIFIERS);
        lines.push(format!(
            "{section}.{index} {subject} {action} the {topic} workflow {qualifier}, \
             tracks queue depth and service latency, and emits deterministic replay markers."
        ));
    }
    lines.push(format!(
        "Checklist {section}: verify ordering, compare deltas, reconcile counters, and persist trace evidence."
    ));
    lines.push(String::new());
}

fn word_count(line: &str) -> usize {
    line.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(seed: u64, target: u32) -> String {
        let mut rng = SplitMix64::new(seed);
        synthetic_document(&mut rng, "main-00000", TOPICS[0], target)
    }

    #[test]
    fn same_seed_same_document() {
        assert_eq!(doc(1337, 2048), doc(1337, 2048));
        assert_ne!(doc(1337, 2048), doc(1338, 2048));
    }

    #[test]
    fn grows_to_the_word_bound_and_no_further_than_one_section() {
        for target in [1, 512, 2048, 7600, 32768] {
            let text = doc(7, target);
            let words = word_count(&text);
            let bound = document_min_words(target);
            assert!(words >= bound, "target {target}: {words} < {bound}");
            // A section has at most 8 + 7 * 27 + 11 = 208 words.
            assert!(words < bound + 208, "target {target}: {words} words");
        }
    }

    #[test]
    fn word_bound_uses_integer_arithmetic() {
        assert_eq!(document_min_words(0), 220);
        assert_eq!(document_min_words(333), 220);
        assert_eq!(document_min_words(512), 337);
        assert_eq!(document_min_words(32768), 21626);
        assert_eq!(document_min_words(u32::MAX), 2_834_678_414);
    }

    #[test]
    fn layout_matches_the_seed_document() {
        let text = doc(1337, 1);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "Document ID: main-00000");
        assert_eq!(lines[1], "Topic: request scheduling");
        assert!(lines[2].starts_with("Instruction: "));
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "Section 1: request scheduling operating notes");
        assert!(lines[5].starts_with("1.1 The "));
        assert!(lines[10].starts_with("1.6 The "));
        assert!(lines[11].starts_with("Checklist 1: "));
        assert_eq!(lines[12], "");
        assert_eq!(lines[13], "Section 2: request scheduling operating notes");
        assert!(lines[20].starts_with("2.7 The "));
        assert!(lines[21].starts_with("Checklist 2: "));
        assert!(text.ends_with('\n'));
    }

    // Pins the draw order (subject, action, qualifier per bullet) for ports.
    #[test]
    fn first_bullet_for_seed_1337() {
        let text = doc(1337, 1);
        let first = text.lines().nth(5).unwrap();
        assert_eq!(first, EXPECTED_FIRST_BULLET_1337);
    }

    // Draws 5, 3, 0 (mod 10) from SplitMix64(1337), as in the rng tests.
    const EXPECTED_FIRST_BULLET_1337: &str = "1.1 The frontend router aggregates the request scheduling \
        workflow under bursty traffic, tracks queue depth and service latency, and emits \
        deterministic replay markers.";

    #[test]
    fn template_wraps_without_touching_the_text() {
        let prompt = llama3_completion_prompt("hello");
        assert_eq!(
            prompt,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello\
             <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn size_rules_follow_the_seed() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..200 {
            let (class, t) = choose_target(SizeSet::Short, &mut rng, (512, 2048), (1, 1));
            assert_eq!(class, "short");
            assert!(SHORT_CHOICES.contains(&t));
            let (_, t) = choose_target(SizeSet::Short, &mut rng, (600, 1000), (1, 1));
            assert_eq!(t, 768);
            let (class, t) = choose_target(SizeSet::Long, &mut rng, (1, 1), (6000, 7600));
            assert_eq!(class, "long");
            assert!((6000..=7600).contains(&t));
        }
        let classes: Vec<&str> = (0..200)
            .map(|_| choose_target(SizeSet::Mixed, &mut rng, (512, 2048), (8192, 32768)).0)
            .collect();
        assert!(classes.contains(&"short") && classes.contains(&"long"));
        assert_eq!(SizeSet::parse("mixed"), Some(SizeSet::Mixed));
        assert_eq!(SizeSet::parse("huge"), None);
    }

    // Draw 0 of SplitMix64(0) is 0xe220a8397b1dcdaf; mod 5 = 0 -> 512.
    #[test]
    fn first_short_target_for_seed_0() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            choose_target(SizeSet::Short, &mut rng, (512, 2048), (8192, 32768)),
            (
                "short",
                SHORT_CHOICES[(0xe220_a839_7b1d_cdaf_u64 % 5) as usize]
            )
        );
    }

    #[test]
    fn filler_is_the_seed_phrase() {
        assert_eq!(
            FILLER,
            " deterministic checkpoint replay baseline cache latency throughput scheduler queue storage observability policy appendix"
        );
    }
}
