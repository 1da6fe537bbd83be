//! `weft detect gen` and `weft detect eval` as a real binary: a small trace
//! is generated twice byte for byte, and the evaluation's JSON has a row per
//! attack kind with precision, recall and F1 for the detector and the
//! rate-limit baseline, in the warm mode and the fresh one.

use std::process::Command;

fn weft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const KINDS: [&str; 5] = [
    "credential_stuffing",
    "privilege_probing",
    "bulk_exfiltration",
    "lateral_movement",
    "low_and_slow",
];

#[test]
fn gen_then_eval_json_has_f1_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    for f in [&a, &b] {
        let (code, stdout, stderr) = weft(&[
            "detect",
            "gen",
            "--out",
            f.to_str().unwrap(),
            "--seed",
            "4",
            "--principals",
            "80",
            "--hours",
            "24",
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(v["events"].as_u64().unwrap() > 1000);
        assert_eq!(v["incidents"], 10);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let (code, stdout, stderr) =
        weft(&["detect", "eval", "--trace", a.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["trace_seed"], 4);
    for method in ["detector", "baseline"] {
        let m = &v[method];
        assert!(m["fp_per_1000_principals_per_day"].is_number(), "{m}");
        let kinds = m["kinds"].as_array().unwrap();
        for kind in KINDS.iter().chain(&["all"]) {
            let row = kinds
                .iter()
                .find(|k| k["kind"] == *kind)
                .unwrap_or_else(|| panic!("{method}: no row for {kind}"));
            for field in ["precision", "recall", "f1"] {
                let x = row[field].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&x), "{method} {kind} {field} = {x}");
            }
            assert!(row.get("ttd_p50_ms").is_some() && row.get("ttd_max_ms").is_some());
        }
    }
    assert!(v["performance"]["events_per_sec"].as_f64().unwrap() > 0.0);

    // The human form names every kind and both methods.
    let (code, stdout, _) = weft(&["detect", "eval", "--trace", a.to_str().unwrap()]);
    assert_eq!(code, 0);
    for word in KINDS.iter().chain(&["detector", "rate_limit", "F1"]) {
        assert!(stdout.contains(word), "{word} missing:\n{stdout}");
    }

    // Fresh mode: one replay per attack, each from 30 s before it, every
    // incident scored; with and without the floors.
    let mut replayed = Vec::new();
    for extra in [&[][..], &["--no-floors"][..]] {
        let mut args = vec!["detect", "eval", "--trace", a.to_str().unwrap(), "--json"];
        args.push("--fresh");
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = weft(&args);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["mode"], "fresh");
        let all = v["detector"]["kinds"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(all["incidents"], 10, "{all}");
        let floors = v["detector"]["description"]
            .as_str()
            .unwrap()
            .contains("floors");
        assert_eq!(floors, extra.is_empty(), "{}", v["detector"]["description"]);
        replayed.push(v["scored_hours"].as_f64().unwrap());
    }
    // Ten replays, each at least 30 s + the attack + 5 min of grace.
    assert!(replayed[0] > 10.0 * 10.0 / 60.0, "{replayed:?}");
    assert_eq!(replayed[0], replayed[1]);
    let (_, stdout, _) = weft(&["detect", "eval", "--trace", a.to_str().unwrap(), "--fresh"]);
    assert!(stdout.contains("fresh detector"), "{stdout}");
}

#[test]
fn eval_refuses_a_file_that_is_not_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.jsonl");
    std::fs::write(&f, "{\"hello\": 1}\n").unwrap();
    let (code, _, stderr) = weft(&["detect", "eval", "--trace", f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
}
