//! Tests that need no database: generated files are current, example manifests parse, help
//! and exit codes of the command line.

mod common;

use std::path::Path;

use common::{run, text};

#[test]
fn committed_completions_and_man_page_are_current() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{}", text(&o));
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("completions/storagetapper.{shell}"));
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == o.stdout,
            "{} is stale: run `make gen`",
            path.display()
        );
    }
    let o = run(&["man"]);
    assert!(o.status.success(), "{}", text(&o));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/storagetapper.1");
    assert!(
        std::fs::read(&path).unwrap_or_default() == o.stdout,
        "{} is stale: run `make gen`",
        path.display()
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("backup"));
}

#[test]
fn every_example_manifest_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("manifests/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            // Password variables cannot be set from a test; the line is blanked instead, and
            // S3 key variables name ones that are always set (keeping line numbers).
            let text: String = std::fs::read_to_string(&p)
                .expect("read")
                .lines()
                .map(|l| {
                    let l2 = l.trim_start();
                    if l2.starts_with("password_env") {
                        ""
                    } else if l2.starts_with("access_key_env") {
                        "access_key_env = \"PATH\""
                    } else if l2.starts_with("secret_key_env") {
                        "secret_key_env = \"PATH\""
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            storagetapper::manifest::Plan::from_text(&p, &text)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no example manifests found");
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for c in [
        "backup",
        "plan",
        "status",
        "list",
        "completions",
        "man",
        "Exit codes",
    ] {
        assert!(out.contains(c), "--help lacks {c}:\n{out}");
    }
    let o = run(&["backup"]);
    assert_eq!(o.status.code(), Some(2), "missing -m is a usage error");
    let o = run(&["backup", "-m", "/nonexistent/m.toml", "--no-progress"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/m.toml"));
}
