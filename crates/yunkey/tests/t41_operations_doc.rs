//! docs/operations.md against the binary: every `yunkey` command in its code blocks parses as
//! written (each is run with `--help` appended, so clap checks every flag and value but nothing
//! starts), every `--flag` its text names exists, and the server commands' `--help` describes
//! their own flags, without the client commands' ones.

mod common;

use common::bin;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

fn operations_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"))
        .unwrap()
}

/// `yunkey ARGS --help`'s output (which must succeed).
fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    common::yunkey_ok(&all)
}

/// The long flags a help text lists (`--data`, `--help`, ...).
fn flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-h, ")
                .or(l.strip_prefix("-V, "))
                .unwrap_or(l);
            l.starts_with("--")
                .then(|| l.split([' ', ',']).next().unwrap().to_owned())
        })
        .collect()
}

/// The subcommands a help text lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// Every command path (`[]`, `["ctl"]`, `["ctl", "chip", "drain"]`, ...) and its help.
fn all_helps() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        out.push((path, text));
    }
    out
}

const CLIENT_FLAGS: [&str; 6] = [
    "--endpoint",
    "--ca",
    "--cert",
    "--key",
    "--json",
    "--timeout",
];

#[test]
fn server_commands_describe_their_own_flags() {
    let coordinator = help(&["coordinator"]);
    let chip = help(&["chip"]);
    let dev = help(&["dev"]);
    for (name, text) in [
        ("coordinator", &coordinator),
        ("chip", &chip),
        ("dev", &dev),
    ] {
        let listed = flags(text);
        for f in CLIENT_FLAGS {
            assert!(
                !listed.contains(f),
                "yunkey {name} --help lists the client flag {f}:\n{text}"
            );
        }
        assert!(listed.contains("--data"), "{text}");
        assert!(listed.contains("--log-format"), "{text}");
    }
    assert!(!coordinator.contains("dev cluster"), "{coordinator}");
    assert!(!chip.contains("dev cluster"), "{chip}");
    assert!(
        coordinator.contains("The coordinator's data directory: `node-id`, `raft/`"),
        "{coordinator}"
    );
    assert!(
        chip.contains("The chip's data directory: `store/`"),
        "{chip}"
    );
    assert!(dev.contains("The dev cluster's data directory"), "{dev}");
    // The client commands list them, also below their own subcommands.
    for path in [
        &["status"][..],
        &["ctl", "status"],
        &["ctl", "chip", "list"],
        &["user", "enroll"],
    ] {
        let listed = flags(&help(path));
        for f in CLIENT_FLAGS {
            assert!(listed.contains(f), "yunkey {path:?} --help lacks {f}");
        }
    }
    assert!(flags(&help(&["status"])).contains("--user-ca-out"));
}

/// The `yunkey` commands in the code blocks of `doc`: continuation lines joined, comments
/// and anything after a pipe or `&&` dropped, leading `VAR=value` assignments kept.
fn documented_commands(doc: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_code = false;
    let mut pending = String::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let line = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        };
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let cut = full.split(['|', '&']).next().unwrap_or_default().trim();
        let words: Vec<&str> = cut.split_whitespace().collect();
        // A command, not a line of output such as `yunkey dev: 1 coordinator, ...`.
        let first = words.iter().position(|w| !w.contains('='));
        if let Some(i) = first.filter(|i| words[*i] == "yunkey") {
            if !words.get(i + 1).is_some_and(|w| w.ends_with(':')) {
                commands.push(cut.to_owned());
            }
        }
    }
    commands
}

#[test]
fn every_documented_command_parses() {
    let doc = operations_md();
    let commands = documented_commands(&doc);
    assert!(commands.len() > 20, "{commands:?}");
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    for cmd in &commands {
        let out = Command::new("bash")
            .args(["-c", &format!("{cmd} --help")])
            .env("PATH", &path)
            .env_remove("YUNKEY_ENDPOINT")
            .env_remove("YUNKEY_DATA")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docs/operations.md: `{cmd}` does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_flag_the_text_names_exists() {
    let known: BTreeSet<String> = all_helps().iter().flat_map(|(_, h)| flags(h)).collect();
    // The text outside code blocks.
    let mut in_code = false;
    let text: String = operations_md()
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .collect::<Vec<_>>()
        .join("\n");
    let named: BTreeSet<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.split_whitespace().next())
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(named.len() > 20, "{named:?}");
    for flag in named {
        assert!(
            known.contains(flag),
            "docs/operations.md names {flag}, which no yunkey command takes"
        );
    }
}
