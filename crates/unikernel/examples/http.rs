//! `http`: a static website over TCP. `port=N` (default 8080), `requests=N` to exit 0 after N
//! requests (default: serve forever). `GET /quit` also ends it with code 0.

#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::format;
use unikernel::{Duration, Network, Runtime, TcpStream, UnikernelError, println};

const INDEX: &str = "<!doctype html>\n<html><head><title>virga</title></head>\n\
<body><h1>Hello from a virga unikernel</h1>\n\
<p>This page was served by the application that is the kernel.</p></body></html>\n";
const ABOUT: &str = "virga unikernel http example\n";

fn respond(net: &mut Network, conn: &mut TcpStream) -> Result<bool, UnikernelError> {
    let mut req = [0u8; 4096];
    let mut len = 0;
    while !req[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == req.len() {
            break;
        }
        let n = net.read(conn, &mut req[len..], Some(Duration::from_secs(10)))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = core::str::from_utf8(&req[..len]).unwrap_or("");
    let mut words = head.split_ascii_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/" | "/index.html") => ("200 OK", "text/html", INDEX),
        ("GET", "/about") => ("200 OK", "text/plain", ABOUT),
        ("GET", "/quit") => ("200 OK", "text/plain", "bye\n"),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n"),
        _ => ("400 Bad Request", "text/plain", "bad request\n"),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    net.write_all(conn, header.as_bytes())?;
    net.write_all(conn, body.as_bytes())?;
    Ok(path == "/quit")
}

fn app(rt: &mut Runtime) -> u8 {
    let port = rt
        .arg("port")
        .and_then(|v| v.parse().ok())
        .unwrap_or(8080u16);
    let limit: Option<u64> = rt.arg("requests").and_then(|v| v.parse().ok());
    let net = match rt.net() {
        Ok(n) => n,
        Err(e) => {
            println!("http: network: {e}");
            return 2;
        }
    };
    let mut listener = match net.tcp_listen(port) {
        Ok(l) => l,
        Err(e) => {
            println!("http: listen: {e}");
            return 2;
        }
    };
    match net.config().address {
        Some((ip, prefix)) => println!("http: listening on {ip}/{prefix} port {port}"),
        None => println!("http: listening on port {port}"),
    }
    let mut served = 0u64;
    loop {
        let mut conn = match net.accept(&mut listener, None) {
            Ok(c) => c,
            Err(e) => {
                println!("http: accept: {e}");
                continue;
            }
        };
        let quit = match respond(net, &mut conn) {
            Ok(q) => q,
            Err(e) => {
                println!("http: connection: {e}");
                false
            }
        };
        net.close(conn);
        served += 1;
        if quit || limit.is_some_and(|l| served >= l) {
            // Let the last response and FIN drain before the VM ends.
            rt.sleep(Duration::from_millis(200));
            println!("http: served {served} requests");
            return 0;
        }
    }
}

unikernel::main!(app);
