//! Mooncake's JSONL traces, one request per line:
//!
//! ```text
//! {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 2353, 2354]}
//! ```
//!
//! `timestamp` is the arrival in ms; `hash_ids` name the prompt's blocks,
//! `ceil(input_length / block size)` of them. The block size is not in the
//! file (Mooncake's own traces use 512), so the caller checks the count
//! against the size the user gives. Other fields are ignored.

use super::{Fields, Format, MAX_INPUT_TOKENS, Record, Trace, jsonl_objects, push};
use sparkhost_workload::Result;

pub fn parse(text: &str) -> Result<Trace> {
    let mut records = Vec::new();
    for item in jsonl_objects(text) {
        let (line, obj) = item?;
        let at = format!("line {line}");
        let f = Fields { at: &at, obj: &obj };
        let arrival_ms = f.time("timestamp", "ms")?;
        let input_length = f.whole("input_length", 1, MAX_INPUT_TOKENS)?;
        let output_length = f.whole("output_length", 1, u32::MAX)?;
        let hash_ids = f.hash_ids("hash_ids")?;
        push(
            &mut records,
            Record {
                source: at,
                session: None,
                arrival_ms,
                input_length,
                output_length,
                hash_ids,
            },
        )?;
    }
    Ok(Trace {
        format: Format::Mooncake,
        block_size: None,
        records,
        skipped: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> String {
        crate::tests::invalid_config(parse(text))
    }

    #[test]
    fn the_fixture_keeps_64_bit_ids_exact() {
        let t = parse(&crate::tests::fixture("mooncake.jsonl")).unwrap();
        assert!(t.records.len() >= 6);
        // Ids that agree in their low 32 bits stay apart (Dynamo PR #12046:
        // `u64 as u32` merged such prefix groups).
        let ids: Vec<u64> = t.records.iter().map(|r| r.hash_ids[0]).collect();
        assert!(ids.iter().any(|&h| h > u64::from(u32::MAX)), "{ids:?}");
        assert!(
            ids.iter()
                .any(|&a| ids.iter().any(|&b| a != b && a as u32 == b as u32)),
            "the fixture has two first ids equal in their low 32 bits: {ids:?}"
        );
        assert!(ids.contains(&18_446_744_073_709_551_615));
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_field() {
        let ok = r#"{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}"#;
        for (bad, expected) in [
            ("{not json", "line 2: not valid JSON"),
            ("[1, 2]", "line 2: expected a JSON object"),
            (
                r#"{"input_length": 10, "output_length": 1, "hash_ids": [1]}"#,
                "`timestamp` is missing",
            ),
            (
                r#"{"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [1]}"#,
                "`timestamp` must be",
            ),
            (
                r#"{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}"#,
                "`input_length` must be a whole number from 1 to 2097152",
            ),
            (
                r#"{"timestamp": 0, "input_length": 10, "output_length": 1.5, "hash_ids": [1]}"#,
                "`output_length` must be",
            ),
            (
                r#"{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": ["a"]}"#,
                "`hash_ids[0]` is \"a\"",
            ),
        ] {
            let m = message(&format!("{ok}\n{bad}\n"));
            assert!(m.starts_with("trace line 2: "), "{m}");
            assert!(m.contains(expected), "{m} lacks {expected}");
        }
    }
}
