//! The layering on real files: every level of precedence, values parsed by
//! their field's type, nested tables, errors that name the variable, and
//! redaction. `Sink` stands in for a settings table with a secret in it.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde::{Deserialize, Serialize};

use super::*;
use crate::layout::OnStale;

fn vars(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    v.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

fn flag(key: &'static str, flag: &'static str, v: &str) -> FlagValue {
    FlagValue {
        key,
        flag,
        value: toml::Value::String(v.to_owned()),
    }
}

fn node_dir(toml: Option<&str>) -> (tempfile::TempDir, NodeDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = NodeDir::new(tmp.path());
    if let Some(t) = toml {
        std::fs::write(dir.config(), t).unwrap();
    }
    (tmp, dir)
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let (_t, dir) = node_dir(Some(
        "api = \"127.0.0.1:1\"\nlisten = \"/ip4/127.0.0.1/tcp/2\"\n",
    ));
    let env = vars(&[("WEFT_API", "127.0.0.1:3"), ("WEFT_LOG_FORMAT", "json")]);
    let flags = [flag("api", "--api", "127.0.0.1:4")];

    let r = resolve(&dir, None, env.clone(), &flags).unwrap();
    assert_eq!(r.config.api, "127.0.0.1:4");
    assert_eq!(r.source("api"), Source::Flag("--api"));
    let r = resolve(&dir, None, env.clone(), &[]).unwrap();
    assert_eq!(r.config.api, "127.0.0.1:3");
    assert_eq!(r.source("api"), Source::Env("WEFT_API".into()));
    assert_eq!(r.config.log_format, "json");
    let r = resolve(&dir, None, vars(&[]), &[]).unwrap();
    assert_eq!(r.config.api, "127.0.0.1:1");
    assert_eq!(r.source("api"), Source::File(dir.config()));
    assert_eq!(r.config.listen, "/ip4/127.0.0.1/tcp/2");
    assert_eq!(r.config.stale_after, Config::default().stale_after);
    assert_eq!(r.source("stale_after"), Source::Default);
    let (_t, empty) = node_dir(None);
    let r = resolve(&empty, None, vars(&[]), &[]).unwrap();
    assert_eq!(r.config, Config::default());
}

#[test]
fn env_values_take_their_field_type() {
    let (_t, dir) = node_dir(Some("peers = [\"/ip4/10.0.0.9/tcp/1\"]\n"));
    let r = resolve(
        &dir,
        None,
        vars(&[
            ("WEFT_AUDIT_ALLOW_ONE_IN", "7"),
            ("WEFT_DETECT", "false"),
            ("WEFT_ON_STALE", "deny"),
            ("WEFT_STALE_AFTER", "90"),
            (
                "WEFT_PEERS",
                "/ip4/10.0.0.2/tcp/7101, /ip4/10.0.0.3/tcp/7101",
            ),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(r.config.audit_allow_one_in, 7);
    assert!(!r.config.detect);
    assert_eq!(r.config.on_stale, OnStale::Deny);
    // A string field keeps digits as text.
    assert_eq!(r.config.stale_after, "90");
    assert_eq!(
        r.config.peers,
        ["/ip4/10.0.0.2/tcp/7101", "/ip4/10.0.0.3/tcp/7101"]
    );
    let r = resolve(
        &dir,
        None,
        vars(&[("WEFT_PEERS", "[\"/ip4/10.0.0.4/tcp/1\"]")]),
        &[],
    )
    .unwrap();
    assert_eq!(r.config.peers, ["/ip4/10.0.0.4/tcp/1"]);
}

#[test]
fn a_bad_value_names_the_variable_not_its_value() {
    let (_t, dir) = node_dir(None);
    for (var, value) in [
        ("WEFT_AUDIT_ALLOW_ONE_IN", "lots"),
        ("WEFT_MAX_CONNECTIONS", "-1"),
        ("WEFT_DETECT", "maybe"),
        ("WEFT_ON_STALE", "sometimes"),
        ("WEFT_API__PORT", "1"),
    ] {
        let e = resolve(&dir, None, vars(&[(var, value)]), &[]).unwrap_err();
        assert!(
            e.starts_with(&format!("environment variable {var}: ")),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        if var != "WEFT_ON_STALE" {
            assert!(!e.contains(value), "{e}");
        }
    }
}

#[test]
fn unknown_weft_variables_are_errors_unless_listed() {
    let (_t, dir) = node_dir(None);
    let e = resolve(&dir, None, vars(&[("WEFT_LISTEN_ADDR", "x")]), &[]).unwrap_err();
    assert!(
        e.starts_with("environment variable WEFT_LISTEN_ADDR: unknown field `listen_addr`"),
        "{e}"
    );
    let r = resolve(
        &dir,
        None,
        vars(&[
            ("WEFT_BENCH_NODES", "3"),
            ("WEFT_TEST_PANIC_HOOK", "1"),
            ("WEFT_API_TOKEN", "t"),
            ("WEFT_DIR", "/x"),
            ("WEFT_API", ""),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(r.config, Config::default());
}

#[test]
fn the_file_keeps_its_own_errors_and_an_explicit_file_must_exist() {
    let (_t, dir) = node_dir(Some("detect = \"yes\"\n"));
    let e = resolve(&dir, None, vars(&[]), &[]).unwrap_err();
    assert!(e.contains("weft.toml is not a valid weft.toml"), "{e}");
    let (_t, dir) = node_dir(None);
    let missing = dir.root().join("etc-weft.toml");
    let e = resolve(&dir, Some(&missing), vars(&[]), &[]).unwrap_err();
    assert!(
        e.contains("cannot read") && e.contains("etc-weft.toml"),
        "{e}"
    );
    std::fs::write(&missing, "api = \"127.0.0.1:9\"\n").unwrap();
    let r = resolve(&dir, Some(&missing), vars(&[]), &[]).unwrap();
    assert_eq!(r.config.api, "127.0.0.1:9");
    assert_eq!(r.source("api"), Source::File(missing));
}

/// A settings table with a secret, as `decision_log` has.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Sink {
    url: String,
    batch_max: u32,
    gzip: bool,
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WithTable {
    api: String,
    decision_log: Option<Sink>,
}

fn layers(file: &str, env: &[(&str, &str)]) -> Result<Layers, String> {
    let (_t, dir) = node_dir(Some(file));
    let mut l = Layers::default();
    l.add_file(&dir.config())?;
    l.add_env(env::settings_from(vars(env))?)?;
    Ok(l)
}

#[test]
fn nested_keys_from_env_merge_into_the_file_table() {
    let l = layers(
        "[decision_log]\nurl = \"http://file/\"\nbatch_max = 5\n",
        &[
            ("WEFT_DECISION_LOG__BATCH_MAX", "50"),
            ("WEFT_DECISION_LOG__GZIP", "true"),
            (
                "WEFT_DECISION_LOG__HEADERS",
                "{Authorization = \"Bearer s3cret\"}",
            ),
        ],
    )
    .unwrap();
    let c: WithTable = l.deserialize().unwrap();
    let sink = c.decision_log.unwrap();
    assert_eq!(sink.url, "http://file/");
    assert_eq!(sink.batch_max, 50);
    assert!(sink.gzip);
    assert_eq!(sink.headers["Authorization"], "Bearer s3cret");
    assert_eq!(
        l.source("decision_log.batch_max"),
        Source::Env("WEFT_DECISION_LOG__BATCH_MAX".into())
    );
    assert!(matches!(l.source("decision_log.url"), Source::File(_)));
    assert_eq!(
        l.source("decision_log.headers.Authorization"),
        Source::Env("WEFT_DECISION_LOG__HEADERS".into())
    );

    // A table the file does not have, made from the environment alone.
    let l = layers("", &[("WEFT_DECISION_LOG__URL", "http://env/")]).unwrap();
    let c: WithTable = l.deserialize().unwrap();
    assert_eq!(c.decision_log.unwrap().url, "http://env/");
    // A whole table in one variable, refined by another.
    let l = layers(
        "",
        &[
            ("WEFT_DECISION_LOG", "{url = \"http://a/\", batch_max = 2}"),
            ("WEFT_DECISION_LOG__BATCH_MAX", "3"),
        ],
    )
    .unwrap();
    let sink = l.deserialize::<WithTable>().unwrap().decision_log.unwrap();
    assert_eq!((sink.url.as_str(), sink.batch_max), ("http://a/", 3));

    let e = layers("", &[("WEFT_DECISION_LOG__BATCH", "1")])
        .unwrap()
        .deserialize::<WithTable>()
        .unwrap_err();
    assert!(
        e.starts_with("environment variable WEFT_DECISION_LOG__BATCH: unknown field `batch`"),
        "{e}"
    );
    let e = layers("", &[("WEFT_DECISION_LOG__HEADERS", "Authorization: x")])
        .unwrap()
        .deserialize::<WithTable>()
        .unwrap_err();
    assert!(
        e.starts_with("environment variable WEFT_DECISION_LOG__HEADERS: not a TOML inline table"),
        "{e}"
    );
    assert!(!e.contains("Authorization"), "{e}");
}

#[test]
fn printed_settings_say_where_from_and_redact_secrets() {
    let l = layers(
        "api = \"127.0.0.1:1\"\n[decision_log]\nurl = \"https://ops:hunter2@siem.example/in\"\n\
         [decision_log.headers]\nAuthorization = \"Bearer file-secret\"\n",
        &[("WEFT_DECISION_LOG__BATCH_MAX", "9")],
    )
    .unwrap();
    let c: WithTable = l.deserialize().unwrap();
    let text = print::to_toml(&c, &l).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("file-secret"),
        "{text}"
    );
    assert!(text.contains("api = \"127.0.0.1:1\"  # file "), "{text}");
    assert!(text.contains("\n[decision_log]\n"), "{text}");
    assert!(
        text.contains("url = \"https://ops:<redacted>@siem.example/in\"  # file "),
        "{text}"
    );
    assert!(
        text.contains("batch_max = 9  # env WEFT_DECISION_LOG__BATCH_MAX\n"),
        "{text}"
    );
    assert!(text.contains("gzip = false  # default\n"), "{text}");
    assert!(
        text.contains("\n[decision_log.headers]\nAuthorization = \"<redacted>\"  # file "),
        "{text}"
    );
    // What is printed reads back as the same shape (secrets aside).
    let back: WithTable = toml::from_str(&text).unwrap();
    assert_eq!(back.decision_log.unwrap().batch_max, 9);

    let json = print::to_json(&c, &l).unwrap();
    assert_eq!(
        json["config"]["decision_log"]["headers"]["Authorization"],
        "<redacted>"
    );
    assert_eq!(
        json["sources"]["decision_log.batch_max"],
        "env WEFT_DECISION_LOG__BATCH_MAX"
    );
    assert_eq!(json["sources"]["decision_log.gzip"], "default");
    assert!(!json.to_string().contains("hunter2"));
}
