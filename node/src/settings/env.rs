//! Which `WEFT_*` environment variables are settings, and the key each sets.
//!
//! `WEFT_` + the weft.toml key in capitals sets that key
//! (`WEFT_AUDIT_ALLOW_ONE_IN` sets `audit_allow_one_in`); a double
//! underscore steps into a table (`WEFT_DECISION_LOG__URL` sets `url` in
//! `[decision_log]`). A variable set to the empty string counts as unset.
//! Variables on [`NOT_SETTINGS`] belong to other parts of weft (the CLI's
//! client, tests, benchmarks) and are skipped; any other `WEFT_*` variable
//! must name a setting.

use std::ffi::OsString;

/// The prefix of every setting's variable.
pub const PREFIX: &str = "WEFT_";

/// `WEFT_*` variables that are not weft.toml settings: an entry ending in
/// `_` covers every variable it starts; any other entry is one name.
pub const NOT_SETTINGS: &[&str] = &[
    // `--dir` and `--config` of `weft node run` and `weft node config`.
    "WEFT_DIR",
    "WEFT_CONFIG",
    // The CLI's client: the API token, CA and client certificate it uses.
    "WEFT_API_TOKEN",
    "WEFT_API_TOKEN_FILE",
    "WEFT_CA",
    "WEFT_CLIENT_CERT",
    "WEFT_CLIENT_KEY",
    "WEFT_NODE",
    // Test hooks and test harnesses.
    "WEFT_TEST_",
    "WEFT_BIN",
    "WEFT_CHROMIUM",
    "WEFT_CHROMEDRIVER",
    "WEFT_CRASH_LOOPS",
    "WEFT_INGEST_OUTCOMES",
    "WEFT_LAB_",
    // Benchmarks and scale runs.
    "WEFT_BENCH_",
    "WEFT_LOAD_",
    "WEFT_SCALE",
    "WEFT_SCALE_",
];

/// One setting from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvSetting {
    /// The variable, like `WEFT_DECISION_LOG__URL`.
    pub var: String,
    /// The key path it sets, like `["decision_log", "url"]`.
    pub path: Vec<String>,
    /// Its value, as written.
    pub value: String,
}

/// Whether `name` is on [`NOT_SETTINGS`].
pub fn is_not_setting(name: &str) -> bool {
    NOT_SETTINGS.iter().any(|n| {
        if n.ends_with('_') {
            name.starts_with(n)
        } else {
            name == *n
        }
    })
}

/// The settings among `vars`, sorted by variable name.
pub fn settings_from(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<EnvSetting>, String> {
    let mut out = Vec::new();
    for (name, value) in vars {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if is_not_setting(name) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| format!("environment variable {name}: the value is not UTF-8"))?;
        if value.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(|p| p.is_empty() || p.starts_with('_')) {
            return Err(format!(
                "environment variable {name}: not a setting's name (WEFT_KEY, or WEFT_TABLE__KEY for a key in a table)"
            ));
        }
        out.push(EnvSetting {
            var: name.to_owned(),
            path,
            value,
        });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn names_map_to_key_paths() {
        let s = settings_from(vars(&[
            ("WEFT_DECISION_LOG__URL", "http://x"),
            ("WEFT_API", "127.0.0.1:1"),
            ("WEFT_EMPTY", ""),
            ("WEFT_BENCH_NODES", "3"),
            ("WEFT_TEST_PANIC_HOOK", "1"),
            ("WEFT_API_TOKEN", "secret"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        let paths: Vec<_> = s.iter().map(|s| s.path.join(".")).collect();
        assert_eq!(paths, ["api", "decision_log.url"]);
    }

    #[test]
    fn malformed_names_are_errors() {
        for bad in ["WEFT_A____B", "WEFT_A__", "WEFT___A"] {
            let e = settings_from(vars(&[(bad, "1")])).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
