//! A cheap, linear look at the text before the YAML parser sees it.
//!
//! serde_yaml (libyaml underneath) takes time far worse than linear on some
//! inputs: 60,000 levels of flow nesting (`a: [[[[…`, 120 KB) cost seconds
//! of CPU, 100,000 levels tens of seconds. The MCP config is three levels
//! deep and a few hundred lines long, so anything far beyond that is
//! refused here, in one pass over the bytes, with an error naming the line,
//! before the parser is given the chance to spend that time.
//!
//! The scan is an estimate, not a YAML parser: it counts nesting (block
//! indentation, compact `- ` entries and flow `[`/`{`) and entries (lines
//! with data, flow openings and commas), knowing just enough YAML not to
//! count brackets inside quotes, comments and block scalars (`|`, `>`).
//! The limits are far above any real file, so an estimate that is off by a
//! little never refuses a file a person wrote.

use super::ConfigError;

/// Largest file accepted, in bytes.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Deepest nesting accepted; the file needs two levels (a server and its
/// fields) and a value or two more.
pub const MAX_DEPTH: usize = 64;

/// Most entries (mapping entries, list items, lines with data) accepted;
/// a server takes about five.
pub const MAX_NODES: usize = 10_000;

/// Whether the text may be handed to the YAML parser; the error names the
/// line where a limit was crossed.
pub(super) fn check(text: &str) -> Result<(), ConfigError> {
    if text.len() > MAX_BYTES {
        return Err(error(None, format!("the file has {} bytes, more than the {MAX_BYTES} allowed", text.len())));
    }
    let mut scan = Scan::default();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        scan.line(line.as_bytes()).map_err(|limit| error(Some(index + 1), limit.message()))?;
    }
    Ok(())
}

fn error(line: Option<usize>, message: String) -> ConfigError {
    ConfigError { server: None, field: None, line, message }
}

/// Which limit a line crossed.
#[derive(Debug, PartialEq, Eq)]
enum Limit {
    Depth,
    Nodes,
}

impl Limit {
    fn message(&self) -> String {
        match self {
            Limit::Depth => format!(
                "values nested more than {MAX_DEPTH} levels deep; an MCP config needs 2 (servers and their fields)"
            ),
            Limit::Nodes => format!("more than {MAX_NODES} entries; an MCP config needs about 5 per server"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

/// The state carried from one line to the next.
#[derive(Default)]
struct Scan {
    /// Columns of the enclosing block collections, outermost first.
    indents: Vec<usize>,
    /// Open flow collections (`[`, `{`) not yet closed.
    flow: usize,
    /// A quoted scalar still open at the end of the previous line.
    quote: Option<Quote>,
    /// The indentation of the line that began a block scalar; more deeply
    /// indented (and blank) lines are its text.
    block_scalar: Option<usize>,
    /// Whether the next character would begin a node, where a quote or a
    /// bracket opens a scalar or a collection rather than being text.
    at_start: bool,
    nodes: usize,
}

impl Scan {
    fn line(&mut self, line: &[u8]) -> Result<(), Limit> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if self.quote.is_some() || self.flow > 0 {
            // Inside a quoted scalar or a flow collection, lines are not
            // layout: the scan simply goes on.
            return self.rest(line, 0, indent);
        }
        if blank || line[indent] == b'#' || (indent == 0 && line.first() == Some(&b'%')) {
            return Ok(());
        }
        let mut at = indent;
        if indent == 0 && (line.starts_with(b"---") || line.starts_with(b"...")) && blank_at(line, 3) {
            // A document marker: what follows starts from scratch.
            self.indents.clear();
            at = 3;
        } else {
            while self.indents.last().is_some_and(|&column| column >= indent) {
                self.indents.pop();
            }
            self.indents.push(indent);
        }
        self.count()?;
        // Compact nesting on one line (`- - x`, `- key: v`, `? k`): each
        // indicator opens a level at the column after it.
        while matches!(line.get(at), Some(b'-' | b'?')) && blank_at(line, at + 1) {
            at += 1;
            while line.get(at) == Some(&b' ') {
                at += 1;
            }
            if at < line.len() {
                self.indents.push(at);
            }
        }
        self.check_depth()?;
        self.at_start = true;
        self.rest(line, at, indent)
    }

    /// Scans the rest of a line from byte `at` for quotes, flow brackets,
    /// comments and block scalar indicators.
    fn rest(&mut self, line: &[u8], mut at: usize, indent: usize) -> Result<(), Limit> {
        while at < line.len() {
            let byte = line[at];
            match self.quote {
                Some(Quote::Double) => {
                    match byte {
                        b'\\' => at += 1,
                        b'"' => self.quote = None,
                        _ => {}
                    }
                    at += 1;
                    continue;
                }
                Some(Quote::Single) => {
                    if byte == b'\'' {
                        if line.get(at + 1) == Some(&b'\'') {
                            at += 1;
                        } else {
                            self.quote = None;
                        }
                    }
                    at += 1;
                    continue;
                }
                None => {}
            }
            match byte {
                b' ' | b'\t' => {}
                b'#' if at == 0 || matches!(line[at - 1], b' ' | b'\t') => return Ok(()),
                b'"' | b'\'' if self.at_start => {
                    self.quote = Some(if byte == b'"' { Quote::Double } else { Quote::Single });
                    self.at_start = false;
                }
                b'[' | b'{' if self.at_start || self.flow > 0 => {
                    self.flow += 1;
                    self.count()?;
                    self.check_depth()?;
                    self.at_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.at_start = false;
                }
                b',' if self.flow > 0 => {
                    self.count()?;
                    self.at_start = true;
                }
                b':' if self.value_follows(line, at) => self.at_start = true,
                // JSON style, `{"key":value}`: a colon right after a quoted
                // key still starts the value.
                b':' if self.flow > 0 && at > 0 && matches!(line[at - 1], b'"' | b'\'') => self.at_start = true,
                b'-' | b'?' if self.at_start && blank_at(line, at + 1) => {}
                b'|' | b'>' if self.at_start && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    return Ok(());
                }
                // An anchor or a tag comes before the node it names.
                b'&' | b'!' if self.at_start => {
                    while at + 1 < line.len() && !matches!(line[at + 1], b' ' | b'\t') {
                        at += 1;
                    }
                }
                _ => self.at_start = false,
            }
            at += 1;
        }
        Ok(())
    }

    /// Whether the `:` at `at` ends a key (rather than being part of a
    /// plain scalar such as a URL).
    fn value_follows(&self, line: &[u8], at: usize) -> bool {
        blank_at(line, at + 1) || (self.flow > 0 && matches!(line.get(at + 1), Some(b',' | b'[' | b']' | b'{' | b'}')))
    }

    fn count(&mut self) -> Result<(), Limit> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Limit::Nodes);
        }
        Ok(())
    }

    fn check_depth(&self) -> Result<(), Limit> {
        if self.indents.len() + self.flow > MAX_DEPTH {
            return Err(Limit::Depth);
        }
        Ok(())
    }
}

/// Whether `at` is the end of the line or a blank.
fn blank_at(line: &[u8], at: usize) -> bool {
    matches!(line.get(at), None | Some(b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> ConfigError {
        match check(text) {
            Ok(()) => panic!("expected a refusal of {:?}", &text[..text.len().min(80)]),
            Err(error) => error,
        }
    }

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("a: {}x{}\n", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn real_files_pass() {
        let text = "# MCP servers\ngmail:\n  url: http://localhost:8002/mcp   # trailing [comment\n  \
                    health_url: \"http://h/{x}\"\n  description: it's [not] a list, {really}\n  enabled: true\n\
                    flow: {url: 'http://a/', health_url: \"http://a/h\", tags: [a, [b, c]]}\n";
        assert_eq!(check(text), Ok(()));
    }

    #[test]
    fn flow_nesting_is_limited_and_names_the_line() {
        assert_eq!(check(&nested("[", "]", MAX_DEPTH - 1)), Ok(()));
        let error = refused(&format!("# ok\nb: 1\n{}", nested("[", "]", 60_000)));
        assert_eq!(error.line, Some(3));
        assert!(error.message.contains("nested more than 64 levels"), "{}", error.message);
        assert_eq!(refused(&nested("{a: ", "}", 100)).line, Some(1));
        // Across lines, too.
        assert_eq!(refused(&format!("a:\n{}", "  [\n".repeat(100))).line, Some(MAX_DEPTH));
    }

    #[test]
    fn block_nesting_is_limited() {
        let deep: String = (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert_eq!(refused(&deep).line, Some(MAX_DEPTH + 1));
        let ok: String = (0..MAX_DEPTH).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert_eq!(check(&ok), Ok(()));
        // Going back out of a block frees its levels.
        let wide: String = (0..1000).map(|i| format!("s{i}:\n  url: x\n  more:\n    deeper: y\n")).collect();
        assert_eq!(check(&wide), Ok(()));
        // Compact entries nest on one line.
        assert!(check(&format!("{}x\n", "- ".repeat(100))).is_err());
        assert_eq!(check(&format!("{}x\n", "- ".repeat(10))), Ok(()));
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_do_not_count() {
        let brackets = "[".repeat(1000);
        for text in [
            format!("a: '{brackets}'\n"),
            format!("a: \"{brackets}\"\n"),
            format!("a: \"x\\\" {brackets}\"\n"),
            format!("a: 'it''s {brackets}'\n"),
            format!("a: 1 # {brackets}\n"),
            format!("# {brackets}\n"),
            format!("a: |\n  {brackets}\n\n  {brackets}\nb: >-\n   {brackets}\n"),
            format!("a: \"multi\n  line {brackets}\n  end\"\n"),
            format!("a: it's {brackets}\n"),
            format!("url: http://x/{brackets}\n"),
            format!("a: x#{brackets}\n"),
            format!("{{\"a\":\"{brackets}\"}}\n"),
        ] {
            assert_eq!(check(&text), Ok(()), "{}", &text[..text.len().min(40)]);
        }
        // After a block scalar ends, brackets count again.
        assert!(check(&format!("a: |\n  {brackets}\nb: {brackets}\n")).is_err());
        // A quote mid-scalar opens nothing, so the brackets after it count.
        assert!(check(&format!("a: [it's, {brackets}]\n")).is_err());
    }

    #[test]
    fn entries_are_limited() {
        let many: String = (0..MAX_NODES + 1).map(|i| format!("k{i}: 1\n")).collect();
        let error = refused(&many);
        assert_eq!(error.line, Some(MAX_NODES + 1));
        assert!(error.message.contains("more than 10000 entries"), "{}", error.message);
        let flow = format!("a: [{}]\n", "1, ".repeat(MAX_NODES + 1));
        assert_eq!(refused(&flow).line, Some(1));
        let fine: String = (0..MAX_NODES / 2).map(|i| format!("k{i}: 1\n# comment\n\n")).collect();
        assert_eq!(check(&fine), Ok(()));
    }

    #[test]
    fn size_is_limited() {
        let error = refused(&"#".repeat(MAX_BYTES + 1));
        assert_eq!(error.line, None);
        assert!(error.message.contains("more than the 1048576 allowed"), "{}", error.message);
    }
}
