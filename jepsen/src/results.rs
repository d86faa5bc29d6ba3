//! The overall result of checking a history:
//! `{"valid": true|false|"unknown", "checkers": {"name": {...}, ...}}`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A checker's verdict. Serialized as `true`, `false` or `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Validity {
    /// The history violates the property.
    False,
    /// The checker could not decide (search budget exhausted, missing final
    /// read, checker error, ...).
    Unknown,
    /// The history satisfies the property.
    True,
}

impl Validity {
    /// `True` for `true`, `False` for `false`.
    pub fn from_bool(b: bool) -> Self {
        if b {
            Validity::True
        } else {
            Validity::False
        }
    }

    /// Combines verdicts: `False` if either is false, else `Unknown` if
    /// either is unknown, else `True`.
    pub fn and(self, other: Validity) -> Validity {
        self.min(other)
    }

    /// [`Validity::and`] over many verdicts; `True` for none.
    pub fn all(it: impl IntoIterator<Item = Validity>) -> Validity {
        it.into_iter().fold(Validity::True, Validity::and)
    }

    /// True only for [`Validity::True`].
    pub fn is_valid(self) -> bool {
        self == Validity::True
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Validity::True => "true",
            Validity::False => "false",
            Validity::Unknown => "unknown",
        })
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::True => s.serialize_bool(true),
            Validity::False => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Validity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or \"unknown\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Validity, E> {
                Ok(Validity::from_bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Validity, E> {
                if v == "unknown" {
                    Ok(Validity::Unknown)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A checker's report: serializable, with a verdict. Each report serializes
/// to a JSON object whose `"valid"` field is [`CheckerReport::validity`].
pub trait CheckerReport: Serialize {
    /// The verdict.
    fn validity(&self) -> Validity;
}

/// The overall result of a test: every checker's report by name, and the
/// combined verdict (false if any checker is false, else unknown if any is
/// unknown, else true).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The combined verdict.
    pub valid: Validity,
    /// Each checker's report, as JSON.
    pub checkers: BTreeMap<String, Value>,
}

impl Default for Results {
    fn default() -> Self {
        Results {
            valid: Validity::True,
            checkers: BTreeMap::new(),
        }
    }
}

impl Results {
    /// No checkers yet (valid: true).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a checker's report under `name`.
    pub fn add<R: CheckerReport>(&mut self, name: &str, report: &R) -> &mut Self {
        let value = match serde_json::to_value(report) {
            Ok(Value::Object(mut m)) => {
                m.insert("valid".into(), serde_json::json!(report.validity()));
                Value::Object(m)
            }
            Ok(other) => serde_json::json!({"valid": report.validity(), "report": other}),
            Err(e) => {
                serde_json::json!({"valid": report.validity(), "error": format!("cannot serialize report: {e}")})
            }
        };
        self.add_value(name, value)
    }

    /// Records a checker that could not run (e.g. a malformed history) as
    /// `{"valid": "unknown", "error": message}`.
    pub fn add_error(&mut self, name: &str, error: impl fmt::Display) -> &mut Self {
        self.add_value(
            name,
            serde_json::json!({"valid": Validity::Unknown, "error": error.to_string()}),
        )
    }

    /// Adds a checker result given as a JSON object with a `"valid"` field
    /// (`true`, `false` or `"unknown"`; missing or malformed counts as
    /// unknown).
    pub fn add_value(&mut self, name: &str, value: Value) -> &mut Self {
        self.checkers.insert(name.to_owned(), value);
        self.valid = Validity::all(self.checkers.values().map(validity_of));
        self
    }

    /// Adds a checker's `Result`: its report, or its error as unknown.
    pub fn add_result<R: CheckerReport, E: fmt::Display>(
        &mut self,
        name: &str,
        result: &Result<R, E>,
    ) -> &mut Self {
        match result {
            Ok(r) => self.add(name, r),
            Err(e) => self.add_error(name, e),
        }
    }

    /// The results as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("results serialize")
    }

    /// The results as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("results serialize")
    }
}

fn validity_of(v: &Value) -> Validity {
    v.get("valid")
        .and_then(|x| Validity::deserialize(x).ok())
        .unwrap_or(Validity::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct R {
        valid: Validity,
        n: u32,
    }
    impl CheckerReport for R {
        fn validity(&self) -> Validity {
            self.valid
        }
    }

    #[test]
    fn validity_json() {
        assert_eq!(json!(Validity::True), json!(true));
        assert_eq!(json!(Validity::False), json!(false));
        assert_eq!(json!(Validity::Unknown), json!("unknown"));
        for v in [Validity::True, Validity::False, Validity::Unknown] {
            let back: Validity = serde_json::from_value(json!(v)).unwrap();
            assert_eq!(back, v);
        }
        assert!(serde_json::from_value::<Validity>(json!("maybe")).is_err());
    }

    #[test]
    fn combination() {
        use Validity::*;
        assert_eq!(Validity::all([]), True);
        assert_eq!(Validity::all([True, True]), True);
        assert_eq!(Validity::all([True, Unknown]), Unknown);
        assert_eq!(Validity::all([Unknown, False, True]), False);

        let mut r = Results::new();
        assert_eq!(r.to_json(), json!({"valid": true, "checkers": {}}));
        r.add("a", &R { valid: True, n: 1 });
        assert_eq!(r.valid, True);
        r.add_error("b", "malformed history");
        assert_eq!(r.valid, Unknown);
        r.add("c", &R { valid: False, n: 2 });
        assert_eq!(r.valid, False);
        let j = r.to_json();
        assert_eq!(j["valid"], json!(false));
        assert_eq!(j["checkers"]["a"], json!({"valid": true, "n": 1}));
        assert_eq!(j["checkers"]["b"]["valid"], json!("unknown"));
        let back: Results = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);

        let mut r = Results::new();
        r.add_result::<R, String>("x", &Err("boom".into()));
        assert_eq!(r.valid, Unknown);
        r.add_value("y", json!({"no": "verdict"}));
        assert_eq!(r.valid, Unknown);
    }
}
