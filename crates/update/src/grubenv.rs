//! GRUB's environment block (`/grub/grubenv` on the ESP): exactly 1024 bytes, the line
//! `# GRUB Environment Block`, `name=value` lines, then `#` padding to the end. GRUB rewrites
//! the file in place through its block list, so it must never change size; the guest rewrites
//! the whole block with one `pwrite` at offset 0 and `fsync`s.
//!
//! The byte format is the one `disk_image::grub::env_block` writes for a fresh image (checked
//! byte for byte in the tests) and `grub-editenv` reads. Values GRUB escaped (`\\`, `\` before
//! a newline) are unescaped on parse; virga's own values never need escaping, and names or
//! values that would are refused on render. Variables other than the ones virga sets are kept
//! as they are, in order.

/// Size of an environment block.
pub const ENV_BLOCK_SIZE: usize = 1024;
/// Its first line.
pub const ENV_HEADER: &str = "# GRUB Environment Block\n";

/// Why an environment block could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubEnvError {
    /// Not 1024 bytes.
    #[error("grubenv is {0} bytes, not 1024")]
    Size(usize),
    /// No header line.
    #[error("grubenv does not start with \"# GRUB Environment Block\"")]
    Header,
    /// A line that is not `name=value`, or not UTF-8.
    #[error("grubenv line {0:?} is not name=value")]
    Line(String),
    /// A name or value that cannot be stored.
    #[error("grubenv variable {0:?} cannot be stored")]
    Variable(String),
    /// The variables do not fit.
    #[error("grubenv variables need {0} bytes, more than 1024")]
    TooLong(usize),
}

/// The variables of an environment block, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvBlock {
    vars: Vec<(String, String)>,
}

impl EnvBlock {
    /// A block with these variables.
    pub fn new(vars: Vec<(String, String)>) -> EnvBlock {
        EnvBlock { vars }
    }

    /// Parses a block as read from disk (must be exactly [`ENV_BLOCK_SIZE`] bytes).
    pub fn parse(block: &[u8]) -> Result<EnvBlock, GrubEnvError> {
        if block.len() != ENV_BLOCK_SIZE {
            return Err(GrubEnvError::Size(block.len()));
        }
        let body = block
            .strip_prefix(ENV_HEADER.as_bytes())
            .ok_or(GrubEnvError::Header)?;
        let mut vars = Vec::new();
        let mut i = 0;
        while i < body.len() {
            // Lines starting with '#' are comments or the padding (which has no newline).
            let end = body[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |p| i + p);
            // A backslash before the newline continues the value.
            let mut line_end = end;
            while line_end < body.len() && line_end > i && escaped(&body[i..line_end]) {
                line_end = body[line_end + 1..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(body.len(), |p| line_end + 1 + p);
            }
            let line = &body[i..line_end];
            i = line_end + 1;
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let text = std::str::from_utf8(line)
                .map_err(|_| GrubEnvError::Line(String::from_utf8_lossy(line).into()))?;
            let (k, v) = text
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| GrubEnvError::Line(text.chars().take(60).collect()))?;
            vars.push((k.to_owned(), unescape(v)));
        }
        Ok(EnvBlock { vars })
    }

    /// The 1024-byte block.
    pub fn render(&self) -> Result<Vec<u8>, GrubEnvError> {
        let mut out = ENV_HEADER.as_bytes().to_vec();
        for (k, v) in &self.vars {
            if k.is_empty()
                || k.contains(['=', '\n', '\\', '#'])
                || k.starts_with(char::is_whitespace)
                || v.contains(['\n', '\\'])
            {
                return Err(GrubEnvError::Variable(k.chars().take(60).collect()));
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        if out.len() > ENV_BLOCK_SIZE {
            return Err(GrubEnvError::TooLong(out.len()));
        }
        out.resize(ENV_BLOCK_SIZE, b'#');
        Ok(out)
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable (in place if present, else appended).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.vars.push((name.to_owned(), value.to_owned())),
        }
    }

    /// All variables in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// Whether the line so far ends in an odd number of backslashes (escaping the newline).
fn escaped(line: &[u8]) -> bool {
    line.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `disk_image::grub::env_block(&SlotEnv::fresh(2).vars())` writes (the disk-image
    /// branch's builder), byte for byte.
    fn disk_image_fresh() -> Vec<u8> {
        let mut b =
            b"# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n".to_vec();
        b.resize(1024, b'#');
        b
    }

    #[test]
    fn same_bytes_as_the_image_builder() {
        let vars = [
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let block = EnvBlock::new(vars);
        assert_eq!(block.render().unwrap(), disk_image_fresh());
        assert_eq!(EnvBlock::parse(&disk_image_fresh()).unwrap(), block);
    }

    #[test]
    fn grub_editenv_style_blocks() {
        // grub-editenv keeps other variables and escapes backslashes and newlines.
        let mut b =
            b"# GRUB Environment Block\nsaved_entry=x\nodd=a\\\\b\nnl=one\\\ntwo\n".to_vec();
        b.resize(1024, b'#');
        let e = EnvBlock::parse(&b).unwrap();
        assert_eq!(e.get("saved_entry"), Some("x"));
        assert_eq!(e.get("odd"), Some("a\\b"));
        assert_eq!(e.get("nl"), Some("one\ntwo"));
    }

    #[test]
    fn refusals() {
        assert_eq!(EnvBlock::parse(&[b'#'; 10]), Err(GrubEnvError::Size(10)));
        assert_eq!(EnvBlock::parse(&[b'#'; 1024]), Err(GrubEnvError::Header));
        let mut b = b"# GRUB Environment Block\nnoequals\n".to_vec();
        b.resize(1024, b'#');
        assert!(matches!(EnvBlock::parse(&b), Err(GrubEnvError::Line(_))));
        let mut e = EnvBlock::default();
        e.set("a=b", "c");
        assert!(e.render().is_err());
        let mut e = EnvBlock::default();
        e.set("a", &"x".repeat(1100));
        assert!(matches!(e.render(), Err(GrubEnvError::TooLong(_))));
        let mut e = EnvBlock::default();
        e.set("a", "x\ny");
        assert!(e.render().is_err());
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 1024..=1024)) {
            let _ = EnvBlock::parse(&bytes);
            let mut b = ENV_HEADER.as_bytes().to_vec();
            b.extend_from_slice(&bytes[..1024 - ENV_HEADER.len()]);
            let _ = EnvBlock::parse(&b);
        }

        #[test]
        fn render_parse_round_trip(vars in proptest::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,12}", "[ -~&&[^\\\\]]{0,20}"), 0..10)) {
            let mut e = EnvBlock::default();
            for (k, v) in &vars {
                e.set(k, v);
            }
            if let Ok(b) = e.render() {
                prop_assert_eq!(b.len(), ENV_BLOCK_SIZE);
                prop_assert_eq!(EnvBlock::parse(&b).unwrap(), e);
            }
        }
    }
}
