//! Pseudo-terminals: allocation, window size, the client's terminal modes, and async I/O on
//! the master side. All through rustix; no unsafe code here.

use std::io;
use std::os::fd::OwnedFd;

use russh::Pty as Mode;
use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::{
    ControlModes, InputModes, LocalModes, OptionalActions, OutputModes, SpecialCodeIndex, Winsize,
};
use tokio::io::unix::AsyncFd;

/// A freshly allocated terminal pair.
#[derive(Debug)]
pub struct PtyPair {
    /// The master side (server end), close-on-exec and non-blocking.
    pub master: OwnedFd,
    /// The slave side (the session's terminal), close-on-exec; given to the child as 0/1/2.
    pub slave: OwnedFd,
    /// Path of the slave, e.g. `/dev/pts/3` (for `SSH_TTY`).
    pub name: String,
}

/// Window size as the client sends it; zero fields are allowed (clients without a terminal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
    /// Width in pixels.
    pub px_width: u32,
    /// Height in pixels.
    pub px_height: u32,
}

impl WindowSize {
    fn to_winsize(self) -> Winsize {
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        Winsize {
            ws_row: clamp(self.rows),
            ws_col: clamp(self.cols),
            ws_xpixel: clamp(self.px_width),
            ws_ypixel: clamp(self.px_height),
        }
    }
}

/// Allocates a terminal pair through `/dev/ptmx`.
pub fn open_pty(size: WindowSize) -> io::Result<PtyPair> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the slave of the pty just allocated (/dev/pts/N), not a path a user controls"
    )]
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(&master, size.to_winsize())?;
    let flags = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
    Ok(PtyPair {
        master,
        slave,
        name: name.to_string_lossy().into_owned(),
    })
}

/// Sets the window size on the master; the kernel sends `SIGWINCH` to the foreground group.
pub fn set_window_size(master: &OwnedFd, size: WindowSize) -> io::Result<()> {
    rustix::termios::tcsetwinsize(master, size.to_winsize())?;
    Ok(())
}

/// Applies the terminal modes of an SSH `pty-req` (RFC 4254 §8) to the slave. Unknown or
/// unsupported opcodes are skipped; speeds are ignored (a pty has none that matter).
pub fn apply_modes(slave: &OwnedFd, modes: &[(Mode, u32)]) -> io::Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    let mut t = rustix::termios::tcgetattr(slave)?;
    for &(mode, value) in modes {
        let on = value != 0;
        let cc = |idx: SpecialCodeIndex, t: &mut rustix::termios::Termios| {
            // Control characters are bytes; 255 means "disabled" as in OpenSSH.
            t.special_codes[idx] = if value > 255 { 255 } else { value as u8 };
        };
        match mode {
            Mode::VINTR => cc(SpecialCodeIndex::VINTR, &mut t),
            Mode::VQUIT => cc(SpecialCodeIndex::VQUIT, &mut t),
            Mode::VERASE => cc(SpecialCodeIndex::VERASE, &mut t),
            Mode::VKILL => cc(SpecialCodeIndex::VKILL, &mut t),
            Mode::VEOF => cc(SpecialCodeIndex::VEOF, &mut t),
            Mode::VEOL => cc(SpecialCodeIndex::VEOL, &mut t),
            Mode::VEOL2 => cc(SpecialCodeIndex::VEOL2, &mut t),
            Mode::VSTART => cc(SpecialCodeIndex::VSTART, &mut t),
            Mode::VSTOP => cc(SpecialCodeIndex::VSTOP, &mut t),
            Mode::VSUSP => cc(SpecialCodeIndex::VSUSP, &mut t),
            Mode::VREPRINT => cc(SpecialCodeIndex::VREPRINT, &mut t),
            Mode::VWERASE => cc(SpecialCodeIndex::VWERASE, &mut t),
            Mode::VLNEXT => cc(SpecialCodeIndex::VLNEXT, &mut t),
            Mode::VDISCARD => cc(SpecialCodeIndex::VDISCARD, &mut t),
            Mode::IGNPAR => t.input_modes.set(InputModes::IGNPAR, on),
            Mode::PARMRK => t.input_modes.set(InputModes::PARMRK, on),
            Mode::INPCK => t.input_modes.set(InputModes::INPCK, on),
            Mode::ISTRIP => t.input_modes.set(InputModes::ISTRIP, on),
            Mode::INLCR => t.input_modes.set(InputModes::INLCR, on),
            Mode::IGNCR => t.input_modes.set(InputModes::IGNCR, on),
            Mode::ICRNL => t.input_modes.set(InputModes::ICRNL, on),
            Mode::IXON => t.input_modes.set(InputModes::IXON, on),
            Mode::IXANY => t.input_modes.set(InputModes::IXANY, on),
            Mode::IXOFF => t.input_modes.set(InputModes::IXOFF, on),
            Mode::IMAXBEL => t.input_modes.set(InputModes::IMAXBEL, on),
            Mode::IUTF8 => t.input_modes.set(InputModes::IUTF8, on),
            Mode::ISIG => t.local_modes.set(LocalModes::ISIG, on),
            Mode::ICANON => t.local_modes.set(LocalModes::ICANON, on),
            Mode::ECHO => t.local_modes.set(LocalModes::ECHO, on),
            Mode::ECHOE => t.local_modes.set(LocalModes::ECHOE, on),
            Mode::ECHOK => t.local_modes.set(LocalModes::ECHOK, on),
            Mode::ECHONL => t.local_modes.set(LocalModes::ECHONL, on),
            Mode::NOFLSH => t.local_modes.set(LocalModes::NOFLSH, on),
            Mode::TOSTOP => t.local_modes.set(LocalModes::TOSTOP, on),
            Mode::IEXTEN => t.local_modes.set(LocalModes::IEXTEN, on),
            Mode::ECHOCTL => t.local_modes.set(LocalModes::ECHOCTL, on),
            Mode::ECHOKE => t.local_modes.set(LocalModes::ECHOKE, on),
            Mode::PENDIN => t.local_modes.set(LocalModes::PENDIN, on),
            Mode::OPOST => t.output_modes.set(OutputModes::OPOST, on),
            Mode::ONLCR => t.output_modes.set(OutputModes::ONLCR, on),
            Mode::OCRNL => t.output_modes.set(OutputModes::OCRNL, on),
            Mode::ONOCR => t.output_modes.set(OutputModes::ONOCR, on),
            Mode::ONLRET => t.output_modes.set(OutputModes::ONLRET, on),
            Mode::CS7 if on => {
                t.control_modes.remove(ControlModes::CSIZE);
                t.control_modes.insert(ControlModes::CS7);
            }
            Mode::CS8 if on => {
                t.control_modes.remove(ControlModes::CSIZE);
                t.control_modes.insert(ControlModes::CS8);
            }
            Mode::PARENB => t.control_modes.set(ControlModes::PARENB, on),
            Mode::PARODD => t.control_modes.set(ControlModes::PARODD, on),
            _ => {}
        }
    }
    rustix::termios::tcsetattr(slave, OptionalActions::Now, &t)?;
    Ok(())
}

/// Reads from a non-blocking fd registered with the runtime. A pty master reports `EIO` once
/// every slave descriptor is closed: that reads as end of file.
pub async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard
            .try_io(|inner| rustix::io::read(inner.get_ref(), &mut *buf).map_err(io::Error::from))
        {
            Ok(Ok(n)) => return Ok(n),
            Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                return Ok(0);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Writes all of `data` to a non-blocking fd registered with the runtime.
pub async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| rustix::io::write(inner.get_ref(), data).map_err(io::Error::from))
        {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_with_size_and_modes() {
        let size = WindowSize {
            cols: 111,
            rows: 33,
            px_width: 0,
            px_height: 0,
        };
        let pty = open_pty(size).unwrap();
        assert!(pty.name.starts_with("/dev/pts/"), "{}", pty.name);
        let ws = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((ws.ws_row, ws.ws_col), (33, 111));
        set_window_size(
            &pty.master,
            WindowSize {
                cols: 80,
                rows: 24,
                ..size
            },
        )
        .unwrap();
        let ws = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((ws.ws_row, ws.ws_col), (24, 80));
        apply_modes(
            &pty.slave,
            &[(Mode::ECHO, 0), (Mode::VINTR, 7), (Mode::ICRNL, 1)],
        )
        .unwrap();
        let t = rustix::termios::tcgetattr(&pty.slave).unwrap();
        assert!(!t.local_modes.contains(LocalModes::ECHO));
        assert!(t.input_modes.contains(InputModes::ICRNL));
        assert_eq!(t.special_codes[SpecialCodeIndex::VINTR], 7);
    }

    #[test]
    fn huge_sizes_clamp() {
        let ws = WindowSize {
            cols: u32::MAX,
            rows: 70_000,
            px_width: 1,
            px_height: 2,
        }
        .to_winsize();
        assert_eq!(
            (ws.ws_col, ws.ws_row, ws.ws_xpixel, ws.ws_ypixel),
            (u16::MAX, u16::MAX, 1, 2)
        );
    }
}
