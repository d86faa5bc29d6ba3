//! The providers file: parsing, defaults, and every refusal naming the
//! provider and field.

use super::config::{parse, KeySource, ProviderKind, DEFAULT_TIMEOUT_MS};
use std::path::Path;
use std::time::Duration;

struct Keys;

impl KeySource for Keys {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "VLM_KEY" => Some("sk-env\n".into()),
            "EMPTY" => Some("  ".into()),
            _ => None,
        }
    }
    fn file(&self, path: &Path) -> Result<String, String> {
        match path.to_str() {
            Some("/etc/orrery/vlm.key") => Ok("sk-file\n".into()),
            Some("/empty.key") => Ok("\n".into()),
            _ => Err(format!("{}: No such file or directory", path.display())),
        }
    }
}

const FULL: &str = r#"
default_provider = "local-vlm"
[[provider]]
name = "local-vlm"
kind = "openai"
base_url = "https://vlm.internal:8000/v1/"
model = "qwen2-vl"
api_key_env = "VLM_KEY"
timeout_ms = 30000
max_requests_per_minute = 60
max_concurrent = 4
max_image_bytes = 4194304
[[provider]]
name = "ollama"
kind = "ollama"
base_url = "http://10.0.0.5:11434"
model = "llava"
api_key_file = "/etc/orrery/vlm.key"
"#;

fn err(text: &str) -> String {
    parse(text, &Keys).unwrap_err()
}

#[test]
fn a_full_file_parses() {
    let c = parse(FULL, &Keys).unwrap();
    assert_eq!(c.default, "local-vlm");
    let v = &c.providers["local-vlm"];
    assert_eq!(v.kind, ProviderKind::OpenAi);
    assert_eq!(v.base_url, "https://vlm.internal:8000/v1");
    assert_eq!(v.api_key.as_ref().unwrap().0, "sk-env");
    assert_eq!(v.max_concurrent, 4);
    let o = &c.providers["ollama"];
    assert_eq!(o.kind, ProviderKind::Ollama);
    assert_eq!(o.api_key.as_ref().unwrap().0, "sk-file");
    assert_eq!(o.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
    assert_eq!(o.max_requests_per_minute, 60);
    // Keys never show in Debug output (the node config is logged).
    assert!(!format!("{c:?}").contains("sk-"));
}

#[test]
fn the_only_provider_is_the_default() {
    let c = parse(
        "[[provider]]\nname = \"a\"\nkind = \"ollama\"\nbase_url = \"http://h\"\nmodel = \"m\"\n",
        &Keys,
    )
    .unwrap();
    assert_eq!(c.default, "a");
    assert!(c.providers["a"].api_key.is_none());
}

#[test]
fn refusals_name_the_provider_and_field() {
    let one = |extra: &str| {
        format!("[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\n{extra}")
    };
    for (text, want) in [
        (one("colour = 1"), "provider \"p\": unknown field \"colour\""),
        (one("api_key = \"sk\""), "provider \"p\": api_key: a key is never given inline"),
        (one("api_key_env = \"NOPE\""), "provider \"p\": api_key_env: the environment variable \"NOPE\" is not set"),
        (one("api_key_env = \"EMPTY\""), "is not set or empty"),
        (one("api_key_file = \"/nope.key\""), "provider \"p\": api_key_file: /nope.key: No such file"),
        (one("api_key_file = \"/empty.key\""), "api_key_file: /empty.key is empty"),
        (one("api_key_env = \"VLM_KEY\"\napi_key_file = \"/etc/orrery/vlm.key\""), "not both"),
        (one("timeout_ms = 0"), "provider \"p\": timeout_ms must be an integer in 1..=600000"),
        (one("max_requests_per_minute = -1"), "max_requests_per_minute must be"),
        (one("max_concurrent = \"4\""), "max_concurrent must be an integer"),
        (one("max_image_bytes = 999999999"), "max_image_bytes must be"),
        (one("") + "[[provider]]\nname = \"p\"\nkind = \"ollama\"\nbase_url = \"http://h\"\nmodel = \"m\"\n", "provider \"p\": the name is used twice"),
        ("[[provider]]\nname = \"p\"\nkind = \"gemini\"\nbase_url = \"http://h\"\nmodel = \"m\"\n".into(), "provider \"p\": kind \"gemini\" is not one of openai, ollama"),
        ("[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"ftp://h\"\nmodel = \"m\"\n".into(), "base_url must be http or https"),
        ("[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://u:pw@h\"\nmodel = \"m\"\n".into(), "credentials"),
        ("[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"not a url\"\nmodel = \"m\"\n".into(), "is not a URL"),
        ("[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://h\"\n".into(), "provider \"p\": model is required"),
        ("[[provider]]\nkind = \"openai\"\n".into(), "provider #1: name is required"),
        ("[[provider]]\nname = \"a b\"\n".into(), "name must be 1..=64"),
        ("".into(), "no [[provider]] is configured"),
        ("providers = 1".into(), "unknown key \"providers\""),
        (format!("default_provider = \"x\"\n{}", one("")), "default_provider \"x\" is no configured provider"),
        ("this is = not toml =".into(), "TOML parse error"),
    ] {
        let e = err(&text);
        assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
    }
    let two = FULL.replace("default_provider = \"local-vlm\"", "");
    assert!(err(&two).contains("2 providers and no default_provider"));
}
