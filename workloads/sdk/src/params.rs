//! Typed access to a workload's parameters.
//!
//! The host passes parameters as text. Every getter here turns a bad value
//! into [`WorkloadError::InvalidConfig`] naming the parameter, the value and
//! what was expected, so the user sees one actionable line instead of a trap.

use crate::wit::sparkhost::workload::types::Param;
use crate::{Generation, ParamInfo, Result, WorkloadError, param};

/// The parameters of one run: the user's values over the defaults declared
/// in [`Workload::describe`](crate::Workload::describe).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    value: String,
    set_by_user: bool,
}

impl Params {
    /// Merges the user's `given` values over the `declared` defaults.
    ///
    /// Refuses names that are not declared and names given twice. The host
    /// already refuses unknown names; checking again keeps a guest correct
    /// under any host, including tests that call it directly.
    pub fn new(declared: &[ParamInfo], given: Vec<Param>) -> Result<Self> {
        let mut entries: Vec<Entry> = declared
            .iter()
            .map(|info| Entry {
                name: info.name.clone(),
                value: info.default_value.clone(),
                set_by_user: false,
            })
            .collect();
        for param in given {
            let Some(entry) = entries.iter_mut().find(|e| e.name == param.name) else {
                let known: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
                return Err(WorkloadError::InvalidConfig(format!(
                    "unknown parameter `{}`; this workload accepts: {}",
                    param.name,
                    if known.is_empty() {
                        "no parameters".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            if entry.set_by_user {
                return Err(WorkloadError::InvalidConfig(format!(
                    "parameter `{}` is given more than once",
                    param.name
                )));
            }
            entry.value = param.value;
            entry.set_by_user = true;
        }
        Ok(Self { entries })
    }

    /// Builds params from `name=value` pairs; convenient in tests.
    pub fn from_pairs(declared: &[ParamInfo], pairs: &[(&str, &str)]) -> Result<Self> {
        let given = pairs
            .iter()
            .map(|(name, value)| Param {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect();
        Self::new(declared, given)
    }

    /// All parameters as `(name, value)`, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
    }

    /// Whether the user set `name` explicitly (rather than taking the default).
    pub fn is_set(&self, name: &str) -> Result<bool> {
        Ok(self.entry(name)?.set_by_user)
    }

    /// The raw text value.
    pub fn get_str(&self, name: &str) -> Result<&str> {
        Ok(self.entry(name)?.value.as_str())
    }

    /// The value, which must be one of `choices`.
    pub fn get_choice(&self, name: &str, choices: &[&str]) -> Result<&str> {
        let value = self.get_str(name)?;
        if choices.contains(&value) {
            Ok(value)
        } else {
            Err(invalid(
                name,
                value,
                &format!("one of {}", choices.join(", ")),
            ))
        }
    }

    /// A whole number in `0..=u32::MAX`.
    pub fn get_u32(&self, name: &str) -> Result<u32> {
        let value = self.get_str(name)?;
        parse_u32(value).ok_or_else(|| invalid(name, value, "a whole number from 0 to 4294967295"))
    }

    /// A whole number of at least `min`.
    pub fn get_u32_min(&self, name: &str, min: u32) -> Result<u32> {
        let value = self.get_str(name)?;
        parse_u32(value)
            .filter(|v| *v >= min)
            .ok_or_else(|| invalid(name, value, &format!("a whole number of at least {min}")))
    }

    /// A whole number in `lo..=hi`.
    pub fn get_u32_in(&self, name: &str, lo: u32, hi: u32) -> Result<u32> {
        let value = self.get_str(name)?;
        parse_u32(value)
            .filter(|v| (lo..=hi).contains(v))
            .ok_or_else(|| invalid(name, value, &format!("a whole number from {lo} to {hi}")))
    }

    /// A whole number in `0..=u32::MAX`, or `None` when the value is empty.
    pub fn get_opt_u32(&self, name: &str) -> Result<Option<u32>> {
        let value = self.get_str(name)?;
        if value.is_empty() {
            return Ok(None);
        }
        parse_u32(value)
            .map(Some)
            .ok_or_else(|| invalid(name, value, "a whole number from 0 to 4294967295, or empty"))
    }

    /// A whole number of at least `min`, or `None` when the value is empty.
    pub fn get_opt_u32_min(&self, name: &str, min: u32) -> Result<Option<u32>> {
        match self.get_opt_u32(name)? {
            Some(_) => self.get_u32_min(name, min).map(Some),
            None => Ok(None),
        }
    }

    /// A finite number.
    pub fn get_f64(&self, name: &str) -> Result<f64> {
        let value = self.get_str(name)?;
        parse_f64(value).ok_or_else(|| invalid(name, value, "a finite number such as 0.7"))
    }

    /// A finite number, or `None` when the value is empty.
    pub fn get_opt_f64(&self, name: &str) -> Result<Option<f64>> {
        let value = self.get_str(name)?;
        if value.is_empty() {
            return Ok(None);
        }
        parse_f64(value)
            .map(Some)
            .ok_or_else(|| invalid(name, value, "a finite number such as 0.7, or empty"))
    }

    /// A whole number in `0..=u64::MAX`, or `None` when the value is empty.
    pub fn get_opt_u64(&self, name: &str) -> Result<Option<u64>> {
        let value = self.get_str(name)?;
        if value.is_empty() {
            return Ok(None);
        }
        value.trim().parse::<u64>().map(Some).map_err(|_| {
            invalid(
                name,
                value,
                "a whole number from 0 to 18446744073709551615, or empty",
            )
        })
    }

    /// `true` or `false`.
    pub fn get_bool(&self, name: &str) -> Result<bool> {
        let value = self.get_str(name)?;
        match value.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid(name, value, "true or false")),
        }
    }

    /// A `MIN:MAX` pair of whole numbers with `1 <= MIN <= MAX`.
    pub fn get_range(&self, name: &str) -> Result<(u32, u32)> {
        let value = self.get_str(name)?;
        let expected = "MIN:MAX with whole numbers 1 <= MIN <= MAX, such as 512:2048";
        let (min, max) = value
            .split_once(':')
            .and_then(|(min, max)| Some((parse_u32(min)?, parse_u32(max)?)))
            .ok_or_else(|| invalid(name, value, expected))?;
        if min == 0 || min > max {
            return Err(invalid(name, value, expected));
        }
        Ok((min, max))
    }

    /// A comma-separated list; an empty value is an empty list. Items are kept
    /// verbatim (no trimming), since stop strings may start or end with spaces.
    pub fn get_list(&self, name: &str) -> Result<Vec<String>> {
        let value = self.get_str(name)?;
        if value.is_empty() {
            return Ok(Vec::new());
        }
        Ok(value.split(',').map(str::to_string).collect())
    }

    /// The sampling params declared by [`generation_params`]: temperature,
    /// top-p, stop and request-seed.
    pub fn get_sampling(&self) -> Result<Sampling> {
        let temperature = self.get_opt_f64("temperature")?;
        if let Some(t) = temperature.filter(|t| *t < 0.0) {
            return Err(invalid(
                "temperature",
                &t.to_string(),
                "0 or more, or empty",
            ));
        }
        let top_p = self.get_opt_f64("top-p")?;
        if let Some(v) = top_p.filter(|v| *v <= 0.0 || *v > 1.0) {
            return Err(invalid(
                "top-p",
                &v.to_string(),
                "above 0 and at most 1, or empty",
            ));
        }
        Ok(Sampling {
            temperature: temperature.map(|t| t as f32),
            top_p: top_p.map(|v| v as f32),
            stop: self.get_list("stop")?,
            seed: self.get_opt_u64("request-seed")?,
        })
    }

    /// All params declared by [`generation_params`] as one [`Generation`].
    pub fn get_generation(&self) -> Result<Generation> {
        let max_tokens = self.get_u32_min("max-tokens", 1)?;
        Ok(self
            .get_sampling()?
            .generation(max_tokens, self.get_bool("ignore-eos")?))
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            // The workload asked for a name it never declared: its bug, not the user's.
            WorkloadError::Internal(format!(
                "parameter `{name}` is read but not declared in describe()"
            ))
        })
    }
}

/// Sampling fields of a [`Generation`], as read by [`Params::get_sampling`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
}

impl Sampling {
    /// A [`Generation`] with these sampling fields.
    pub fn generation(&self, max_tokens: u32, ignore_eos: bool) -> Generation {
        Generation {
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop.clone(),
            seed: self.seed,
            ignore_eos,
        }
    }
}

/// Defaults of the params [`generation_params`] declares, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationDefaults<'a> {
    pub max_tokens: &'a str,
    pub temperature: &'a str,
    pub top_p: &'a str,
    pub stop: &'a str,
    pub ignore_eos: &'a str,
}

impl GenerationDefaults<'static> {
    /// The seed harness's: max_tokens 256, temperature 0.7, top_p 1.0, stop
    /// `<|eot_id|>`, no ignore_eos.
    pub const SEED: Self = Self {
        max_tokens: "256",
        temperature: "0.7",
        top_p: "1.0",
        stop: "<|eot_id|>",
        ignore_eos: "false",
    };
}

/// Declarations of `max-tokens`, `temperature`, `top-p`, `stop`,
/// `request-seed` and `ignore-eos` (the names the host's shorthand flags
/// `--max-tokens`, `--temperature`, `--top-p`, `--request-seed` set), read
/// back with [`Params::get_generation`] or [`Params::get_sampling`].
pub fn generation_params(d: &GenerationDefaults<'_>) -> Vec<ParamInfo> {
    vec![
        param(
            "max-tokens",
            "max_tokens sent with every request (at least 1).",
            d.max_tokens,
        ),
        param(
            "temperature",
            "temperature sent with every request; empty leaves it out.",
            d.temperature,
        ),
        param(
            "top-p",
            "top_p sent with every request, in (0, 1]; empty leaves it out.",
            d.top_p,
        ),
        param(
            "stop",
            "Comma-separated stop strings; empty sends none. Strings cannot contain a comma.",
            d.stop,
        ),
        param(
            "request-seed",
            "Sampling seed sent as `seed` with every request; empty leaves it out.",
            "",
        ),
        param(
            "ignore-eos",
            "true asks the server to generate exactly max-tokens tokens.",
            d.ignore_eos,
        ),
    ]
}

fn parse_u32(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

fn parse_f64(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn invalid(name: &str, value: &str, expected: &str) -> WorkloadError {
    WorkloadError::InvalidConfig(format!(
        "parameter `{name}`: {value:?} is not valid; expected {expected}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<ParamInfo> {
        [
            ("requests", "64"),
            ("temperature", "0.7"),
            ("range", "512:2048"),
            ("flag", "false"),
            ("seed", ""),
            ("set", "short"),
            ("stop", "<|eot_id|>"),
        ]
        .iter()
        .map(|(name, default)| ParamInfo {
            name: name.to_string(),
            description: String::new(),
            default_value: default.to_string(),
        })
        .collect()
    }

    fn config_message(err: WorkloadError) -> String {
        match err {
            WorkloadError::InvalidConfig(msg) => msg,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_when_not_given() {
        let p = Params::from_pairs(&declared(), &[]).unwrap();
        assert_eq!(p.get_u32("requests").unwrap(), 64);
        assert_eq!(p.get_f64("temperature").unwrap(), 0.7);
        assert_eq!(p.get_range("range").unwrap(), (512, 2048));
        assert!(!p.get_bool("flag").unwrap());
        assert_eq!(p.get_opt_u64("seed").unwrap(), None);
        assert_eq!(p.get_list("stop").unwrap(), ["<|eot_id|>"]);
        assert!(!p.is_set("requests").unwrap());
    }

    #[test]
    fn user_values_override_defaults() {
        let p = Params::from_pairs(
            &declared(),
            &[
                ("requests", "3"),
                ("range", "6000:7600"),
                ("flag", "true"),
                ("seed", "42"),
                ("stop", "a, b,"),
            ],
        )
        .unwrap();
        assert_eq!(p.get_u32("requests").unwrap(), 3);
        assert!(p.is_set("requests").unwrap());
        assert_eq!(p.get_range("range").unwrap(), (6000, 7600));
        assert!(p.get_bool("flag").unwrap());
        assert_eq!(p.get_opt_u64("seed").unwrap(), Some(42));
        assert_eq!(p.get_list("stop").unwrap(), ["a", " b", ""]);
        let empty = Params::from_pairs(&declared(), &[("stop", "")]).unwrap();
        assert!(empty.get_list("stop").unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_the_parameter_value_and_expectation() {
        let p = Params::from_pairs(
            &declared(),
            &[
                ("requests", "-1"),
                ("temperature", "hot"),
                ("range", "2048:512"),
                ("flag", "yes"),
                ("seed", "x"),
                ("set", "huge"),
            ],
        )
        .unwrap();
        let msg = config_message(p.get_u32("requests").unwrap_err());
        assert!(
            msg.contains("`requests`") && msg.contains("\"-1\"") && msg.contains("whole number")
        );
        let msg = config_message(p.get_f64("temperature").unwrap_err());
        assert!(msg.contains("`temperature`") && msg.contains("\"hot\""));
        let msg = config_message(p.get_range("range").unwrap_err());
        assert!(msg.contains("`range`") && msg.contains("\"2048:512\"") && msg.contains("MIN:MAX"));
        let msg = config_message(p.get_bool("flag").unwrap_err());
        assert!(msg.contains("true or false"));
        config_message(p.get_opt_u64("seed").unwrap_err());
        let msg = config_message(p.get_choice("set", &["short", "long"]).unwrap_err());
        assert!(msg.contains("one of short, long"));
    }

    #[test]
    fn ranges_reject_zero_and_malformed() {
        for bad in ["0:10", "10", "a:b", "1:2:3", ":5", ""] {
            let p = Params::from_pairs(&declared(), &[("range", bad)]).unwrap();
            config_message(p.get_range("range").unwrap_err());
        }
        let p = Params::from_pairs(&declared(), &[("range", "7:7")]).unwrap();
        assert_eq!(p.get_range("range").unwrap(), (7, 7));
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        for bad in ["NaN", "inf", "-inf"] {
            let p = Params::from_pairs(&declared(), &[("temperature", bad)]).unwrap();
            config_message(p.get_f64("temperature").unwrap_err());
        }
    }

    #[test]
    fn unknown_and_repeated_names_are_refused() {
        let msg = config_message(Params::from_pairs(&declared(), &[("reqests", "1")]).unwrap_err());
        assert!(msg.contains("`reqests`") && msg.contains("requests"));
        let msg = config_message(
            Params::from_pairs(&declared(), &[("requests", "1"), ("requests", "2")]).unwrap_err(),
        );
        assert!(msg.contains("more than once"));
    }

    #[test]
    fn bounded_whole_numbers() {
        let p = Params::from_pairs(&declared(), &[("requests", "3"), ("seed", "")]).unwrap();
        assert_eq!(p.get_u32_min("requests", 3).unwrap(), 3);
        let msg = config_message(p.get_u32_min("requests", 4).unwrap_err());
        assert!(msg.contains("at least 4"), "{msg}");
        assert_eq!(p.get_u32_in("requests", 2, 10).unwrap(), 3);
        let msg = config_message(p.get_u32_in("requests", 5, 10).unwrap_err());
        assert!(msg.contains("from 5 to 10"), "{msg}");
        assert_eq!(p.get_opt_u32("seed").unwrap(), None);
        assert_eq!(p.get_opt_u32("requests").unwrap(), Some(3));
        assert_eq!(p.get_opt_u32_min("seed", 4).unwrap(), None);
        assert_eq!(p.get_opt_u32_min("requests", 3).unwrap(), Some(3));
        let msg = config_message(p.get_opt_u32_min("requests", 4).unwrap_err());
        assert!(msg.contains("at least 4"), "{msg}");
    }

    #[test]
    fn generation_params_read_back() {
        let declared = generation_params(&GenerationDefaults::SEED);
        let g = Params::from_pairs(&declared, &[])
            .unwrap()
            .get_generation()
            .unwrap();
        assert_eq!(g.max_tokens, 256);
        assert_eq!((g.temperature, g.top_p), (Some(0.7), Some(1.0)));
        assert_eq!(g.stop, ["<|eot_id|>"]);
        assert_eq!((g.seed, g.ignore_eos), (None, false));
        for bad in [
            &[("max-tokens", "0")][..],
            &[("temperature", "-1")],
            &[("top-p", "0")],
            &[("top-p", "1.5")],
        ] {
            let p = Params::from_pairs(&declared, bad).unwrap();
            config_message(p.get_generation().unwrap_err());
        }
        let p = Params::from_pairs(
            &declared,
            &[
                ("temperature", ""),
                ("request-seed", "5"),
                ("ignore-eos", "true"),
            ],
        )
        .unwrap();
        let g = p.get_generation().unwrap();
        assert_eq!((g.temperature, g.seed, g.ignore_eos), (None, Some(5), true));
    }

    #[test]
    fn undeclared_reads_are_internal_errors() {
        let p = Params::from_pairs(&declared(), &[]).unwrap();
        assert!(matches!(p.get_str("nope"), Err(WorkloadError::Internal(_))));
    }
}
