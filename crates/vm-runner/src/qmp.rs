//! QMP, QEMU's machine protocol: one short connection per command.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::VmError;

/// Sends one QMP command over the socket at `path` and waits for its answer.
pub(crate) fn execute(
    path: &Path,
    command: &str,
    arguments: Option<serde_json::Value>,
) -> Result<(), VmError> {
    let stream = UnixStream::connect(path)
        .map_err(|e| VmError::io(format!("QMP socket {}", path.display()), e))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| VmError::io("QMP", e))?);
    let mut writer = stream;
    let mut line = String::new();
    let expect_return =
        |reader: &mut BufReader<UnixStream>, line: &mut String| -> Result<(), VmError> {
            loop {
                line.clear();
                if reader
                    .read_line(line)
                    .map_err(|e| VmError::io("QMP read", e))?
                    == 0
                {
                    return Err(VmError::Qmp("connection closed".into()));
                }
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                if v.get("return").is_some() {
                    return Ok(());
                }
                if let Some(e) = v.get("error") {
                    return Err(VmError::Qmp(e.to_string()));
                }
            }
        };
    reader
        .read_line(&mut line)
        .map_err(|e| VmError::io("QMP greeting", e))?;
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(|e| VmError::io("QMP write", e))?;
    expect_return(&mut reader, &mut line)?;
    let mut request = serde_json::json!({ "execute": command });
    if let Some(args) = arguments {
        request["arguments"] = args;
    }
    writer
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| VmError::io("QMP write", e))?;
    expect_return(&mut reader, &mut line)
}
