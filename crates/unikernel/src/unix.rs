//! The `unix` target: a normal Linux process. Console = stdout, block = the file named by
//! `VIRGA_BLOCK`, network = host sockets, entropy = the kernel's, clocks = the process's.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream, UdpSocket as Udp};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use crate::{BlockInfo, Ipv4Addr, NetConfig, Result, Runtime, SocketAddrV4, UnikernelError};

/// Environment variable naming the block device file.
pub const BLOCK_ENV: &str = "VIRGA_BLOCK";
const SECTOR: u64 = 512;

fn epoch() -> StdInstant {
    static START: OnceLock<StdInstant> = OnceLock::new();
    *START.get_or_init(StdInstant::now)
}

pub(crate) fn console_write(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

pub(crate) fn monotonic_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn sleep_until(deadline_ns: u64) {
    let now = monotonic_ns();
    if deadline_ns > now {
        std::thread::sleep(Duration::from_nanos(deadline_ns - now));
    }
}

pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|_| UnikernelError::NoEntropy)
}

pub(crate) fn exit(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code))
}

/// The block device file.
#[derive(Debug)]
pub struct Block {
    file: File,
    sectors: u64,
}

impl Block {
    fn open() -> std::result::Result<Option<Self>, String> {
        let Some(path) = std::env::var_os(BLOCK_ENV) else {
            return Ok(None);
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.to_string_lossy()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len == 0 || !len.is_multiple_of(SECTOR) {
            return Err(format!(
                "{}: size {len} is not a multiple of 512",
                path.to_string_lossy()
            ));
        }
        Ok(Some(Self {
            file,
            sectors: len / SECTOR,
        }))
    }

    pub(crate) fn info(&self) -> BlockInfo {
        BlockInfo {
            sector_size: SECTOR as u32,
            sectors: self.sectors,
        }
    }

    pub(crate) fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, sector * SECTOR)
            .map_err(|_| UnikernelError::Device("read"))
    }

    pub(crate) fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        self.file
            .write_all_at(buf, sector * SECTOR)
            .map_err(|_| UnikernelError::Device("write"))
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|_| UnikernelError::Device("flush"))
    }
}

/// A listening TCP port.
#[derive(Debug)]
pub struct TcpListener(StdListener);
/// An established TCP connection.
#[derive(Debug)]
pub struct TcpStream(StdStream);
/// A bound UDP port.
#[derive(Debug)]
pub struct UdpSocket(Udp);

/// The network through the host's sockets, bound to one address (`bind=`, default 127.0.0.1).
#[derive(Debug)]
pub struct Network {
    bind: Ipv4Addr,
}

fn io_err(e: std::io::Error) -> UnikernelError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => UnikernelError::Timeout,
        K::AddrInUse => UnikernelError::InvalidArgument("address in use"),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::NotConnected => {
            UnikernelError::Closed
        }
        _ => UnikernelError::Device("socket"),
    }
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
    }
}

/// A zero timeout would mean "block forever" to std; use the smallest real one.
fn std_timeout(t: Option<Duration>) -> Option<Duration> {
    t.map(|d| d.max(Duration::from_micros(1)))
}

pub(crate) fn open_network(cmdline: &str) -> Result<Network> {
    let bind = match crate::cmdline::value(cmdline, "bind") {
        Some(b) => b
            .parse()
            .map_err(|_| UnikernelError::InvalidArgument("bind= is not IPv4"))?,
        None => Ipv4Addr::LOCALHOST,
    };
    Ok(Network { bind })
}

impl Network {
    /// The address sockets are bound to.
    pub fn config(&self) -> NetConfig {
        NetConfig {
            mac: [0; 6],
            address: Some((self.bind, 32)),
            gateway: None,
        }
    }

    /// Nothing to do: the host kernel runs the stack.
    pub fn poll(&mut self) {}

    pub(crate) fn serve_until(&mut self, deadline_ns: u64) {
        sleep_until(deadline_ns);
    }

    /// Listens on TCP `port`.
    pub fn tcp_listen(&mut self, port: u16) -> Result<TcpListener> {
        StdListener::bind((self.bind, port))
            .map(TcpListener)
            .map_err(io_err)
    }

    /// Waits for the next connection.
    pub fn accept(
        &mut self,
        listener: &mut TcpListener,
        timeout: Option<Duration>,
    ) -> Result<TcpStream> {
        let Some(t) = timeout else {
            listener.0.set_nonblocking(false).map_err(io_err)?;
            let (s, _) = listener.0.accept().map_err(io_err)?;
            let _ = s.set_nodelay(true);
            return Ok(TcpStream(s));
        };
        listener.0.set_nonblocking(true).map_err(io_err)?;
        let deadline = StdInstant::now() + t;
        loop {
            match listener.0.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).map_err(io_err)?;
                    let _ = s.set_nodelay(true);
                    return Ok(TcpStream(s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if StdInstant::now() >= deadline {
                        return Err(UnikernelError::Timeout);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// Reads into `buf`; `Ok(0)` when the peer closed its side.
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize> {
        stream
            .0
            .set_read_timeout(std_timeout(timeout))
            .map_err(io_err)?;
        stream.0.read(buf).map_err(io_err)
    }

    /// Writes all of `data`.
    pub fn write_all(&mut self, stream: &mut TcpStream, data: &[u8]) -> Result<()> {
        stream.0.write_all(data).map_err(io_err)
    }

    /// Closes the connection.
    pub fn close(&mut self, stream: TcpStream) {
        let _ = stream.0.shutdown(std::net::Shutdown::Write);
    }

    /// Binds UDP `port`.
    pub fn udp_bind(&mut self, port: u16) -> Result<UdpSocket> {
        Udp::bind((self.bind, port)).map(UdpSocket).map_err(io_err)
    }

    /// Sends one datagram.
    pub fn send_to(&mut self, socket: &UdpSocket, data: &[u8], to: SocketAddrV4) -> Result<()> {
        socket.0.send_to(data, to).map(|_| ()).map_err(io_err)
    }

    /// Receives one datagram.
    pub fn recv_from(
        &mut self,
        socket: &UdpSocket,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<(usize, SocketAddrV4)> {
        socket
            .0
            .set_read_timeout(std_timeout(timeout))
            .map_err(io_err)?;
        socket
            .0
            .recv_from(buf)
            .map(|(n, a)| (n, v4(a)))
            .map_err(io_err)
    }
}

/// Process entry used by [`crate::main!`] on unix.
pub fn main(app: fn(&mut Runtime) -> u8) -> std::process::ExitCode {
    epoch();
    let block = match Block::open() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("unikernel: cannot open block device: {e}");
            return std::process::ExitCode::from(hvt_abi::exit::USAGE);
        }
    };
    let cmdline = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut rt = Runtime::new(cmdline, block);
    let code = app(&mut rt);
    let _ = std::io::stdout().flush();
    std::process::ExitCode::from(code)
}
