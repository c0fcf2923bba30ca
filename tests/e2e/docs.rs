//! Every `puente` command the READMEs show (shell blocks and inline code) is one the CLI
//! accepts: each is run with the real binary against a closed port and must not be refused
//! as a usage error (clap exits 2 for an unknown flag, a missing or extra argument).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Documents checked, relative to the repository root.
const DOCUMENTS: &[&str] = &["README.md", "deploy/README.md", "python/README.md"];
/// Longest one command may take (it fails to connect at once).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A port nothing listens on: every client command fails to connect, after parsing.
const CLOSED: &str = "127.0.0.1:1";
/// What shell variables in the examples (`$ALICE`, `$SETTLEMENT`) stand for.
const SOME_ID: &str = "6f1c1c2e-0b8e-4c59-9d59-3a8c1f1f0009";

/// Splits shell text into words: quotes group (and are removed), `\` escapes, `;`, `&&`, `||`
/// and `|` end a command. Returns the commands' words.
fn shell_words(text: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, commands: &mut Vec<Vec<String>>| {
        if *in_word {
            commands.last_mut().unwrap().push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ';' | '|' | '&' => {
                end_word(&mut word, &mut in_word, &mut commands);
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                commands.push(Vec::new());
            }
            c if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut commands),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut commands);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The `puente` invocation in one shell command, without redirections, environment
/// assignments, subshell parentheses or a `docker exec` / `kubectl exec` prefix.
fn puente_invocation(words: &[String]) -> Option<Vec<String>> {
    let mut words: Vec<String> =
        words.iter().map(|w| w.trim_start_matches('(').trim_end_matches(')').to_owned()).collect();
    words.retain(|w| !w.is_empty());
    // Redirections: `> file`, `< file`, `>file`, `2>&1`, here-documents.
    let mut kept = Vec::new();
    let mut skip_next = false;
    for word in words {
        if skip_next {
            skip_next = false;
            continue;
        }
        if matches!(word.as_str(), ">" | ">>" | "<" | "2>" | "<<") {
            skip_next = true;
        } else if !(word.starts_with('>') || word.starts_with('<') || word.starts_with("2>")) {
            kept.push(word);
        }
    }
    let start = kept.iter().position(|w| !w.contains('=') || w.starts_with('-'))?;
    let kept = &kept[start..];
    let from = match kept.first()?.as_str() {
        "puente" => 0,
        // The image's entrypoint, not a container named puente (`--name puente`).
        "docker" | "kubectl" => {
            (1..kept.len()).rev().find(|&i| kept[i] == "puente" && kept[i - 1] != "--name")?
        }
        _ => return None,
    };
    Some(kept[from + 1..].to_vec())
}

/// Where a command was found: a shell block (a full command line) or inline code in prose
/// (possibly only a mention of the command: its required arguments may be left out).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Found {
    Shell,
    Inline,
}

/// Every `puente` command in `text` (a Markdown document), with its line number.
fn documented_commands(text: &str) -> Vec<(usize, Found, Vec<String>)> {
    let mut found = Vec::new();
    let mut in_shell = false;
    let mut in_other_block = false;
    let mut heredoc: Option<String> = None;
    let mut pending = String::new();
    let mut paragraph = String::new();
    let mut paragraph_line = 0;
    let lines: Vec<&str> = text.lines().collect();
    let flush_paragraph =
        |paragraph: &mut String, line: usize, found: &mut Vec<(usize, Found, Vec<String>)>| {
            for (i, span) in paragraph.split('`').enumerate() {
                if i % 2 == 1 && span.starts_with("puente ") {
                    for command in shell_words(span) {
                        if let Some(args) = puente_invocation(&command) {
                            found.push((line, Found::Inline, args));
                        }
                    }
                }
            }
            paragraph.clear();
        };
    for (index, raw) in lines.iter().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if let Some(end) = &heredoc {
            if line == end {
                heredoc = None;
            }
            continue;
        }
        if line.starts_with("```") {
            flush_paragraph(&mut paragraph, paragraph_line, &mut found);
            if in_shell || in_other_block {
                in_shell = false;
                in_other_block = false;
            } else if line == "```sh" {
                in_shell = true;
            } else {
                in_other_block = true;
            }
            continue;
        }
        if in_other_block {
            continue;
        }
        if !in_shell {
            if line.is_empty() {
                flush_paragraph(&mut paragraph, paragraph_line, &mut found);
            } else {
                if paragraph.is_empty() {
                    paragraph_line = number;
                }
                paragraph.push_str(line);
                paragraph.push(' ');
            }
            continue;
        }
        // A shell line: strip a comment (an unquoted `#` after a blank), join continuations.
        let mut code = String::new();
        let (mut single, mut double) = (false, false);
        let mut previous = ' ';
        for c in line.chars() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '#' if !single && !double && previous.is_whitespace() => break,
                _ => {}
            }
            code.push(c);
            previous = c;
        }
        if let Some((_, rest)) = code.split_once("<<") {
            let end = rest.trim().trim_matches(['\'', '"', '-']).split_whitespace().next().unwrap_or("EOF");
            heredoc = Some(end.to_owned());
        }
        let code = code.trim_end();
        if let Some(continued) = code.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        for command in shell_words(&std::mem::take(&mut pending)) {
            if let Some(args) = puente_invocation(&command) {
                found.push((number, Found::Shell, args));
            }
        }
    }
    flush_paragraph(&mut paragraph, paragraph_line, &mut found);
    found
}

/// The arguments to run: shell variables filled in, `~` and absolute paths moved into the
/// scratch directory (nothing outside it may be touched, even by a command that gets further
/// than expected), every server a closed port, and `serve` given an address it cannot parse
/// (so that it stops before it opens anything).
fn runnable(args: &[String], scratch: &Path) -> Vec<String> {
    let mut out: Vec<String> = args
        .iter()
        .map(|a| {
            let a = if a.starts_with('$') { SOME_ID.to_owned() } else { a.clone() };
            match a.strip_prefix("~/").or_else(|| a.strip_prefix('/')) {
                Some(rest) => scratch.join(rest).to_string_lossy().into_owned(),
                None => a,
            }
        })
        .collect();
    for i in 0..out.len() {
        if out[i] == "--server" && i + 1 < out.len() {
            out[i + 1] = CLOSED.to_owned();
        }
        if out[i] == "--listen" && i + 1 < out.len() {
            out[i + 1] = "not-an-address".to_owned();
        }
    }
    if out.first().map(String::as_str) == Some("serve") && !out.iter().any(|a| a == "--listen") {
        out.push("--listen".into());
        out.push("not-an-address".into());
    }
    out
}

#[test]
fn every_documented_puente_command_parses() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut refused = Vec::new();
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(repo.join(document)).unwrap();
        for (line, found, args) in documented_commands(&text) {
            if args.iter().any(|a| a == "...") {
                refused.push(format!(
                    "{document}:{line}: `puente {}` is a placeholder, not a command",
                    args.join(" ")
                ));
                continue;
            }
            let args = runnable(&args, scratch.path());
            let mut child = Command::new(env!("CARGO_BIN_EXE_puente"))
                .args(&args)
                .current_dir(scratch.path())
                .env("HOME", scratch.path())
                .env("PUENTE_SERVER", CLOSED)
                .env_remove("PUENTE_API_KEY")
                .env_remove("PUENTE_API_KEY_FILE")
                .env_remove("PUENTE_CONFIG")
                .env_remove("PUENTE_DATA_DIR")
                .env_remove("PUENTE_LISTEN")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{document}:{line}: `puente {}` did not finish", args.join(" "));
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            // clap's usage errors exit 2; Puente's own errors (here: cannot connect) exit 1.
            // Prose may name a command without its required arguments.
            let mention = found == Found::Inline
                && stderr.contains("the following required arguments were not provided");
            if status.code() == Some(2) && !mention {
                let reason = stderr.lines().next().unwrap_or_default();
                refused.push(format!("{document}:{line}: `puente {}`: {reason}", args.join(" ")));
            }
            checked += 1;
        }
    }
    assert!(refused.is_empty(), "documented commands the CLI refuses:\n{}", refused.join("\n"));
    assert!(checked >= 60, "only {checked} commands found: is the extraction broken?");
}

#[test]
fn the_extraction_finds_commands_where_the_documents_put_them() {
    let text = "Run `puente status` now.\n\n```sh\nalias puente=x\nputs # `puente no`\n\
                puente accounts create --participant a \\\n  --currency USD   # a comment\n\
                X=1 puente whoami && puente rates stream < feed.txt\n\
                (umask 077; puente pii-key generate k1 > keys)\n\
                kubectl exec pod -- puente status\n\
                docker run -d --name puente -v x:/y puente:0.1.0\n\
                puente holders create h --pii-file - <<'EOF'\n{\"full_name\": \"x\"}\nEOF\n```\n\
                ```\n$ puente not-a-shell-block\n```\n";
    let found: Vec<String> = documented_commands(text).into_iter().map(|(_, _, a)| a.join(" ")).collect();
    assert_eq!(
        found,
        [
            "status",
            "accounts create --participant a --currency USD",
            "whoami",
            "rates stream",
            "pii-key generate k1",
            "status",
            "holders create h --pii-file -",
        ]
    );
}
