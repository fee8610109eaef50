//! Running the Debian tools the builder relies on, with errors that name the package to install.

use std::process::{Command, Output};

use crate::DiskImageError;

/// Runs `cmd`; a missing program becomes [`DiskImageError::MissingTool`] naming `package`, a
/// non-zero exit [`DiskImageError::ToolFailed`] with the tool's stderr.
pub fn run(cmd: &mut Command, tool: &str, package: &str) -> Result<Output, DiskImageError> {
    tracing::debug!("running {cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DiskImageError::MissingTool {
                what: format!("`{tool}` is not installed"),
                package: package.to_owned(),
            }
        } else {
            DiskImageError::ToolFailed {
                tool: tool.to_owned(),
                message: e.to_string(),
            }
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return Err(DiskImageError::ToolFailed {
            tool: tool.to_owned(),
            message: format!("{} ({})", text.trim(), out.status),
        });
    }
    Ok(out)
}
