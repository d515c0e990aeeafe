//! The documentation's links: every relative link in README.md and
//! docs/*.md names a file that exists (relative to the page that links),
//! every `#anchor` (on its own or after a `.md` file) names a heading of
//! that page (GitHub's slugs), and every page of docs/ is reachable from
//! the README. http(s) and mailto links are not followed. Links inside code
//! blocks and code spans are not links.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of a page outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((n + 1, line)),
            _ => {}
        }
    }
    lines
}

/// A line without its code spans (`...`, ``...``).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                // An unclosed span: the backticks are text.
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links `[text](target "title")` of a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let bytes = line.as_bytes();
    let mut targets = Vec::new();
    let mut i = 0;
    while let Some(pos) = line[i..].find("](") {
        let open = i + pos + 2;
        // The target runs to the matching ')' (targets may hold balanced parentheses).
        let mut depth = 1;
        let mut end = open;
        while end < bytes.len() {
            match bytes[end] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        if depth == 0 {
            let inside = line[open..end].trim();
            // <target with spaces> "title", or target "title"
            let target = match inside.strip_prefix('<') {
                Some(bracketed) => bracketed.split('>').next().unwrap_or(""),
                None => inside.split_whitespace().next().unwrap_or(""),
            };
            targets.push(target.to_string());
        }
        i = end.min(bytes.len());
        if i < open {
            i = open;
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, code marks and link syntax
/// dropped, punctuation other than `-` and `_` removed, spaces to `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](url) -> text
    while let Some(start) = rest.find('[') {
        match rest[start..].find("](") {
            Some(mid) => {
                let mid = start + mid;
                let end = rest[mid..].find(')').map_or(rest.len(), |e| mid + e + 1);
                text.push_str(&rest[..start]);
                text.push_str(&rest[start + 1..mid]);
                rest = &rest[end..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings, with GitHub's `-1`, `-2`… for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let heading = line[hashes..].trim().trim_end_matches('#').trim();
        let base = slug(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every relative link of every page, as (page, line, target).
fn links() -> Vec<(PathBuf, usize, String)> {
    let mut all = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).expect("readable page");
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if !is_external(&target) {
                    all.push((page.clone(), n, target));
                }
            }
        }
    }
    all
}

/// What is wrong with one link, if anything.
fn check(page: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("empty link".into());
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (target, None),
    };
    let linked = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("a page has a folder").join(file)
    };
    if !linked.exists() {
        return Some(format!("{} does not exist", relative(&linked)));
    }
    let anchor = anchor?;
    if linked.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "an anchor into {}, which is not Markdown",
            relative(&linked)
        ));
    }
    let text = fs::read_to_string(&linked).expect("readable linked page");
    let known = anchors(&text);
    if known.contains(anchor) {
        None
    } else {
        Some(format!(
            "no heading of {} has the anchor #{anchor} (its anchors: {})",
            relative(&linked),
            known.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let links = links();
    assert!(
        links.len() > 20,
        "only {} relative links found: is the link parser broken?",
        links.len()
    );
    let broken: Vec<String> = links
        .iter()
        .filter_map(|(page, line, target)| {
            check(page, target).map(|why| format!("{}:{line}: ({target}): {why}", relative(page)))
        })
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_docs_page_is_reachable_from_the_readme() {
    let mut reached = BTreeSet::new();
    let mut queue = vec![root().join("README.md")];
    while let Some(page) = queue.pop() {
        let Ok(page) = page.canonicalize() else {
            continue;
        };
        if page.extension().is_none_or(|e| e != "md") || !reached.insert(page.clone()) {
            continue;
        }
        let text = fs::read_to_string(&page).expect("readable page");
        for (_, line) in prose_lines(&text) {
            for target in link_targets(line) {
                let file = target.split('#').next().unwrap_or("");
                if !is_external(&target) && !file.is_empty() {
                    queue.push(page.parent().expect("a page has a folder").join(file));
                }
            }
        }
    }
    let unreached: Vec<String> = pages()
        .into_iter()
        .filter(|page| !reached.contains(&page.canonicalize().expect("page path")))
        .map(|page| relative(&page))
        .collect();
    assert!(
        unreached.is_empty(),
        "pages no link from README.md leads to: {unreached:?}"
    );
}

#[test]
fn the_link_checker_reads_markdown_as_github_does() {
    assert_eq!(
        slug("Backends: tract against ONNX Runtime"),
        "backends-tract-against-onnx-runtime"
    );
    assert_eq!(
        slug("Reference baselines (scikit-learn)"),
        "reference-baselines-scikit-learn"
    );
    assert_eq!(
        slug("Retraining, rollback, drift"),
        "retraining-rollback-drift"
    );
    assert_eq!(slug("1. The demo"), "1-the-demo");
    assert_eq!(
        slug("`model.dir` and [scopes](x.md)"),
        "modeldir-and-scopes"
    );
    assert_eq!(
        link_targets("see [a](x.md#b), `[not](a-link.md)` and [c](<y z.md> \"title\")"),
        vec!["x.md#b".to_string(), "y z.md".to_string()]
    );
    assert_eq!(
        link_targets("[`configs/default.toml`](../configs/default.toml)"),
        vec!["../configs/default.toml"]
    );
    let text = "# A\n```\n# not a heading\n[no](link.md)\n```\n## A\n";
    assert_eq!(
        anchors(text).into_iter().collect::<Vec<_>>(),
        vec!["a".to_string(), "a-1".to_string()]
    );
    assert_eq!(prose_lines(text).len(), 2);
}

/// The paths the layout page lists, from its code blocks: each line's first
/// word when it starts with a folder of the repository.
fn layout_paths() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/layout.md")).unwrap();
    let mut in_code = false;
    let mut paths = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let rooted = [
            "src/",
            "tests/",
            "benches/",
            "examples/",
            "configs/",
            "deploy/",
        ]
        .iter()
        .chain(&["models/", "data/", "scripts/", "docs/"])
        .any(|p| first.starts_with(p));
        if in_code && rooted {
            paths.push(first.to_string());
        }
    }
    paths
}

#[test]
fn the_layout_page_names_every_source_file_and_nothing_else() {
    let listed = layout_paths();
    assert!(
        listed.len() > 50,
        "the layout page lists {} paths",
        listed.len()
    );
    let missing: Vec<&String> = listed
        .iter()
        .filter(|p| !root().join(p.as_str()).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/layout.md names paths that do not exist: {missing:?}"
    );
    let mut unnamed = Vec::new();
    let mut folders = vec![root().join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = relative(&path);
                if !listed.contains(&name) {
                    unnamed.push(name);
                }
            }
        }
    }
    unnamed.sort();
    assert!(
        unnamed.is_empty(),
        "docs/layout.md does not name {unnamed:?}"
    );
}

/// The layout's rules, checked by the project's own tool: no import cycle
/// between files of src/, no file over 600 lines before its unit tests.
#[test]
fn src_has_no_import_cycle_and_no_over_long_file() {
    use crate::common::process::Run;
    let output = std::process::Command::new("python3")
        .arg(root().join("scripts/module_graph.py"))
        .arg(root().join("src"))
        .run();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("import cycles: 0"), "{report}");
}

/// Names say one thing each: no two public types of src/ share a name.
#[test]
fn no_two_public_types_share_a_name() {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut clashes = Vec::new();
    let mut folders = vec![root().join("src")];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["pub", "struct" | "enum" | "trait" | "type", name, ..] = words[..] {
                    let name: String = name.chars().take_while(|c| c.is_alphanumeric()).collect();
                    if let Some(first) = seen.insert(name.clone(), relative(&path)) {
                        clashes.push(format!("{name} in {first} and {}", relative(&path)));
                    }
                }
            }
        }
    }
    assert!(seen.len() > 50, "read {} public types", seen.len());
    assert!(clashes.is_empty(), "{clashes:?}");
}

/// Every metric the daemon registers is in the metrics table of
/// docs/outputs.md, and the table names no metric that does not exist.
#[test]
fn the_metrics_table_names_every_metric_and_nothing_else() {
    let rendered = accelwatch::telemetry::Metrics::new().render();
    let registered: BTreeSet<String> = rendered
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(registered.len() > 20, "{rendered}");
    let page = fs::read_to_string(root().join("docs/outputs.md")).unwrap();
    // Every `accelwatch_…` name in the first cell of a row (a row may
    // name two).
    let documented: BTreeSet<String> = page
        .lines()
        .filter(|line| line.starts_with("| `accelwatch_"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter_map(|code| code.split('{').next())
        .map(str::to_string)
        .collect();
    let undocumented: Vec<&String> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/outputs.md: {undocumented:?}"
    );
    // A labelled family renders only once it has a child: the names the
    // table adds must be registered in the source.
    let source = fs::read_to_string(root().join("src/telemetry/metrics.rs")).unwrap();
    let unknown: Vec<&String> = documented
        .difference(&registered)
        .filter(|name| !source.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented, not registered: {unknown:?}"
    );
}

/// The soak's defaults as docs/fuzzing.md gives them (`NAME` (value))
/// are the ones scripts/fuzz_soak.sh sets (`NAME="${NAME:-value}"`).
#[test]
fn the_fuzzing_page_gives_the_soak_scripts_defaults() {
    let script = fs::read_to_string(root().join("scripts/fuzz_soak.sh")).unwrap();
    let page = fs::read_to_string(root().join("docs/fuzzing.md")).unwrap();
    let mut named = 0;
    for line in script.lines() {
        let Some((name, rest)) = line.split_once("=\"${") else {
            continue;
        };
        let Some(default) = rest
            .strip_prefix(&format!("{name}:-"))
            .and_then(|r| r.strip_suffix("}\""))
        else {
            continue;
        };
        let spelled = format!("`{name}` (");
        for (at, _) in page.match_indices(&spelled) {
            let given = page[at + spelled.len()..].split(')').next().unwrap();
            assert_eq!(given, default, "docs/fuzzing.md gives {name} as {given}");
            named += 1;
        }
    }
    assert!(named >= 3, "the page names RSS_MB, TIMEOUT_S and MAX_LEN");
}
