//! A small, total MIME reader for user-data: RFC 5322 headers with folding, RFC 2045/2046
//! multiparts (bounded: splitting stops at the part limit), base64 and quoted-printable bodies.

use super::{MetadataError, decode_base64};

pub(super) struct Message<'a> {
    headers: Vec<(String, String)>,
    pub(super) body: &'a [u8],
    pub(super) warnings: Vec<String>,
}

impl<'a> Message<'a> {
    /// Splits headers from body. Never fails: a line that is not a header ends the headers.
    pub(super) fn parse(data: &'a [u8]) -> Self {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        let mut first = true;
        let mut body_start = data.len();
        while pos < data.len() {
            let end = data[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(data.len(), |i| pos + i);
            let next = (end + 1).min(data.len());
            let line = &data[pos..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                body_start = next;
                break;
            }
            if first && line.starts_with(b"From ") {
                // mbox "From " envelope line.
                first = false;
                pos = next;
                continue;
            }
            first = false;
            if matches!(line[0], b' ' | b'\t')
                && let Some((_, v)) = headers.last_mut()
            {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
                pos = next;
                continue;
            }
            match line.iter().position(|&b| b == b':') {
                Some(colon)
                    if colon > 0
                        && line[..colon].iter().all(|b| b.is_ascii_graphic())
                        && headers.len() < 128 =>
                {
                    let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
                    let value = String::from_utf8_lossy(&line[colon + 1..])
                        .trim()
                        .to_owned();
                    headers.push((name, value));
                }
                _ => {
                    body_start = pos;
                    break;
                }
            }
            pos = next;
        }
        Message {
            headers,
            body: &data[body_start.min(data.len())..],
            warnings: Vec::new(),
        }
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Lowercased `type/subtype` (empty when absent) and the parameters.
    pub(super) fn content_type(&self) -> (String, Vec<(String, String)>) {
        let Some(v) = self.header("content-type") else {
            return (String::new(), Vec::new());
        };
        let mut fields = split_params(v).into_iter();
        let ct = fields
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let params = fields.filter_map(|f| parse_param(&f)).collect();
        (ct, params)
    }

    pub(super) fn filename(&self) -> Option<String> {
        let from = |h: &str, key: &str| {
            self.header(h).and_then(|v| {
                let params: Vec<_> = split_params(v)
                    .iter()
                    .skip(1)
                    .filter_map(|f| parse_param(f))
                    .collect();
                param(&params, key)
            })
        };
        from("content-disposition", "filename").or_else(|| from("content-type", "name"))
    }

    pub(super) fn decoded_body(&self) -> Result<Vec<u8>, MetadataError> {
        let cte = self
            .header("content-transfer-encoding")
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match cte.as_str() {
            "base64" => decode_base64("user-data MIME part", self.body),
            "quoted-printable" => Ok(decode_qp(self.body)),
            "" | "7bit" | "8bit" | "binary" => Ok(self.body.to_vec()),
            other => Err(MetadataError::Mime {
                reason: format!("unknown transfer encoding {other:?}"),
            }),
        }
    }
}

/// Splits on `;` outside double quotes.
fn split_params(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_param(field: &str) -> Option<(String, String)> {
    let (k, v) = field.split_once('=')?;
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    Some((k.trim().to_ascii_lowercase(), v.replace("\\\"", "\"")))
}

pub(super) fn param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

pub(super) struct Split<'a> {
    pub(super) parts: Vec<&'a [u8]>,
    pub(super) closed: bool,
}

/// Splits a multipart body at `--boundary` lines. The line break before a delimiter
/// belongs to the delimiter; the preamble and epilogue are dropped.
/// More than `max_parts` bodies is refused as soon as the next delimiter is seen, so a
/// message with millions of parts costs one scan of the first few.
pub(super) fn split_multipart<'a>(
    body: &'a [u8],
    boundary: &str,
    max_parts: usize,
) -> Result<Split<'a>, MetadataError> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(MetadataError::Mime {
            reason: "invalid boundary".into(),
        });
    }
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    let mut closed = false;
    let mut seen = false;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i);
        let line = &body[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(delim) {
            let is_close = rest.starts_with(b"--");
            let tail = if is_close { &rest[2..] } else { rest };
            if tail.iter().all(|b| matches!(b, b' ' | b'\t')) {
                seen = true;
                if let Some(s) = start.take() {
                    let mut e = pos;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    if parts.len() >= max_parts {
                        return Err(MetadataError::Mime {
                            reason: format!("more than {max_parts} parts"),
                        });
                    }
                    parts.push(&body[s..e.max(s)]);
                }
                if is_close {
                    closed = true;
                    break;
                }
                start = Some((end + 1).min(body.len()));
            }
        }
        pos = end + 1;
    }
    if !seen {
        return Err(MetadataError::Mime {
            reason: "multipart body has no boundary line".into(),
        });
    }
    if let Some(s) = start {
        if parts.len() >= max_parts {
            return Err(MetadataError::Mime {
                reason: format!("more than {max_parts} parts"),
            });
        }
        parts.push(&body[s.min(body.len())..]);
    }
    Ok(Split { parts, closed })
}

/// Quoted-printable decoding; malformed escapes are kept literally.
pub(super) fn decode_qp(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'=' {
            let rest = &input[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            if rest.len() >= 2
                && let (Some(h), Some(l)) = (hex(rest[0]), hex(rest[1]))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
