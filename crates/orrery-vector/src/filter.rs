//! Payload filters: a pure, deterministic predicate over a point's payload.
//!
//! `{"must": [..], "should": [..], "must_not": [..]}`, each a list of
//! conditions `{key, match}`, `{key, any: [..]}` or `{key, range: {gt, gte,
//! lt, lte}}`. A point matches when every `must` condition holds, no
//! `must_not` condition holds, and (if `should` is not empty) at least one
//! `should` condition holds. Keys are dotted paths into nested objects; when
//! the value found is an array, a condition holds if it holds for any
//! element. A missing key makes every condition on it false.

use serde_json::{Map, Value};

/// A scalar a condition compares against.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Scalar {
    fn parse(v: &Value, field: &str) -> Result<Scalar, String> {
        match v {
            Value::String(s) => Ok(Scalar::Str(s.clone())),
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::Number(n) => n
                .as_f64()
                .map(Scalar::Num)
                .ok_or_else(|| format!("{field}: number out of range")),
            _ => Err(format!(
                "{field} must be a string, number or boolean, got {v}"
            )),
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Str(a), Value::String(b)) => a == b,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Num(a), Value::Number(b)) => b.as_f64() == Some(*a),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Range {
    pub(crate) fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Match(Scalar),
    Any(Vec<Scalar>),
    Range(Range),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The dotted key, split.
    pub path: Vec<String>,
    pub test: Test,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

impl Filter {
    /// Parses a filter from JSON; the error names the offending field
    /// (e.g. `filter.must[1].range.gt`).
    pub fn parse(v: &Value) -> Result<Filter, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| "filter must be an object".to_string())?;
        let mut f = Filter::default();
        for (k, list) in obj {
            let field = format!("filter.{k}");
            let target = match k.as_str() {
                "must" => &mut f.must,
                "should" => &mut f.should,
                "must_not" => &mut f.must_not,
                _ => {
                    return Err(format!(
                        "{field}: unknown clause (expected must, should or must_not)"
                    ))
                }
            };
            let items = list
                .as_array()
                .ok_or_else(|| format!("{field} must be a list of conditions"))?;
            for (i, c) in items.iter().enumerate() {
                target.push(Condition::parse(c, &format!("{field}[{i}]"))?);
            }
        }
        Ok(f)
    }

    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        self.must.iter().all(|c| c.holds(payload))
            && !self.must_not.iter().any(|c| c.holds(payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.holds(payload)))
    }

    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }
}

impl Condition {
    fn parse(v: &Value, field: &str) -> Result<Condition, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{field} must be an object"))?;
        let key = obj
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{field}.key must be a string"))?;
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(format!("{field}.key {key:?} is not a valid dotted key"));
        }
        let mut test = None;
        for (k, val) in obj {
            let sub = format!("{field}.{k}");
            let t = match k.as_str() {
                "key" => continue,
                "match" => Test::Match(Scalar::parse(val, &sub)?),
                "any" => {
                    let arr = val
                        .as_array()
                        .ok_or_else(|| format!("{sub} must be a list"))?;
                    Test::Any(
                        arr.iter()
                            .enumerate()
                            .map(|(i, x)| Scalar::parse(x, &format!("{sub}[{i}]")))
                            .collect::<Result<_, _>>()?,
                    )
                }
                "range" => Test::Range(parse_range(val, &sub)?),
                _ => {
                    return Err(format!(
                        "{sub}: unknown condition (expected match, any or range)"
                    ))
                }
            };
            if test.replace(t).is_some() {
                return Err(format!(
                    "{field} must have exactly one of match, any or range"
                ));
            }
        }
        let test =
            test.ok_or_else(|| format!("{field} must have exactly one of match, any or range"))?;
        Ok(Condition {
            path: key.split('.').map(str::to_string).collect(),
            test,
        })
    }

    fn holds(&self, payload: &Map<String, Value>) -> bool {
        let Some((first, rest)) = self.path.split_first() else {
            return false;
        };
        let mut cur = match payload.get(first) {
            Some(v) => v,
            None => return false,
        };
        for p in rest {
            match cur.get(p.as_str()) {
                Some(v) => cur = v,
                None => return false,
            }
        }
        match cur {
            Value::Array(items) => items.iter().any(|v| self.test_one(v)),
            v => self.test_one(v),
        }
    }

    fn test_one(&self, v: &Value) -> bool {
        match &self.test {
            Test::Match(s) => s.matches(v),
            Test::Any(list) => list.iter().any(|s| s.matches(v)),
            Test::Range(r) => v.as_f64().is_some_and(|x| r.contains(x)),
        }
    }
}

fn parse_range(v: &Value, field: &str) -> Result<Range, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{field} must be an object"))?;
    let mut r = Range::default();
    for (k, val) in obj {
        let x = val
            .as_f64()
            .ok_or_else(|| format!("{field}.{k} must be a number"))?;
        let slot = match k.as_str() {
            "gt" => &mut r.gt,
            "gte" => &mut r.gte,
            "lt" => &mut r.lt,
            "lte" => &mut r.lte,
            _ => {
                return Err(format!(
                    "{field}.{k}: unknown bound (expected gt, gte, lt, lte)"
                ))
            }
        };
        *slot = Some(x);
    }
    if r == Range::default() {
        return Err(format!("{field} needs at least one of gt, gte, lt, lte"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn f(v: Value) -> Filter {
        Filter::parse(&v).unwrap()
    }

    #[test]
    fn match_any_range_and_nesting() {
        let doc = p(
            json!({"color": "red", "n": 5, "ok": true, "tags": ["a", "b"], "meta": {"lang": "en", "score": 0.5}}),
        );
        assert!(f(json!({"must": [{"key": "color", "match": "red"}]})).matches(&doc));
        assert!(!f(json!({"must": [{"key": "color", "match": "blue"}]})).matches(&doc));
        assert!(f(json!({"must": [{"key": "n", "match": 5.0}]})).matches(&doc));
        assert!(f(json!({"must": [{"key": "ok", "match": true}]})).matches(&doc));
        assert!(f(json!({"must": [{"key": "tags", "match": "b"}]})).matches(&doc));
        assert!(f(json!({"must": [{"key": "color", "any": ["x", "red"]}]})).matches(&doc));
        assert!(f(json!({"must": [{"key": "meta.lang", "match": "en"}]})).matches(&doc));
        assert!(
            f(json!({"must": [{"key": "meta.score", "range": {"gt": 0.4, "lte": 0.5}}]}))
                .matches(&doc)
        );
        assert!(!f(json!({"must": [{"key": "meta.score", "range": {"lt": 0.5}}]})).matches(&doc));
        assert!(!f(json!({"must": [{"key": "meta.missing", "match": 1}]})).matches(&doc));
        // A string never satisfies a range; a number never matches a string.
        assert!(!f(json!({"must": [{"key": "color", "range": {"gt": 0}}]})).matches(&doc));
        assert!(!f(json!({"must": [{"key": "n", "match": "5"}]})).matches(&doc));
    }

    #[test]
    fn clauses_combine() {
        let doc = p(json!({"a": 1, "b": 2}));
        assert!(f(json!({})).matches(&doc));
        assert!(!f(json!({"must_not": [{"key": "a", "match": 1}]})).matches(&doc));
        assert!(
            f(json!({"should": [{"key": "a", "match": 9}, {"key": "b", "match": 2}]}))
                .matches(&doc)
        );
        assert!(!f(json!({"should": [{"key": "a", "match": 9}]})).matches(&doc));
        assert!(!f(json!({"must": [{"key": "a", "match": 1}], "must_not": [{"key": "b", "range": {"gte": 2}}]})).matches(&doc));
    }

    #[test]
    fn malformed_filters_name_the_field() {
        let cases = [
            (json!([]), "filter must be an object"),
            (json!({"nope": []}), "filter.nope"),
            (json!({"must": {}}), "filter.must must be a list"),
            (json!({"must": [{"match": 1}]}), "filter.must[0].key"),
            (
                json!({"must": [{"key": "a"}]}),
                "filter.must[0] must have exactly one",
            ),
            (
                json!({"must": [{"key": "a", "match": 1, "any": [1]}]}),
                "exactly one",
            ),
            (
                json!({"must": [{"key": "a", "match": [1]}]}),
                "filter.must[0].match",
            ),
            (
                json!({"should": [{"key": "a", "range": {}}]}),
                "filter.should[0].range needs",
            ),
            (
                json!({"must_not": [{"key": "a", "range": {"gt": "x"}}]}),
                "filter.must_not[0].range.gt",
            ),
            (json!({"must": [{"key": "a..b", "match": 1}]}), "dotted key"),
            (
                json!({"must": [{"key": "a", "any": 3}]}),
                "filter.must[0].any must be a list",
            ),
        ];
        for (v, want) in cases {
            let e = Filter::parse(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e} (wanted {want})");
        }
    }
}
