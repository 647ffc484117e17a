//! `first-touch`: what this machine charges for the first write to a page of
//! fresh anonymous memory, the cost a burst pays for every page its new
//! instances touch (`benches/burst.sh` prints it before the burst).
//!
//! Maps `MIB` MiB (default 1024), writes one byte per 4 KiB page and reports
//! the time per page; then unmaps it, maps the same amount again at once and
//! repeats. On bare metal both are well under a microsecond (a minor fault and
//! the zeroing of a page). In a VM whose guest hands free memory back to the
//! host (virtio-balloon free page reporting), memory that has been free for a
//! while is no longer backed by the host, and its first touch also takes a
//! fault in the hypervisor: the first figure is then much higher than the
//! second, whose pages the guest has only just freed.
//!
//! Usage: `first-touch [MIB]`. Prints one line:
//! `first touch: cold X.XX µs/page, just freed Y.YY µs/page (N MiB)`.

use std::time::Instant;

const PAGE: usize = 4096;

/// Maps `len` bytes, writes a byte to each page, unmaps; µs per page.
fn touch(len: usize) -> std::io::Result<f64> {
    // SAFETY: a fresh private anonymous mapping, not aliased by anything; it
    // is written only within its length and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        let t = Instant::now();
        for off in (0..len).step_by(PAGE) {
            std::ptr::write_volatile(base.add(off), 1);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / (len / PAGE) as f64;
        libc::munmap(p, len);
        Ok(us)
    }
}

fn main() {
    let mib: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1024,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: first-touch [MIB]  (a positive number of MiB)");
            std::process::exit(2);
        }
    };
    let len = mib << 20;
    let run = || -> std::io::Result<(f64, f64)> { Ok((touch(len)?, touch(len)?)) };
    match run() {
        Ok((cold, warm)) => {
            println!(
                "first touch: cold {cold:.2} µs/page, just freed {warm:.2} µs/page ({mib} MiB)"
            )
        }
        Err(e) => {
            eprintln!("first-touch: mapping {mib} MiB failed: {e}");
            std::process::exit(1);
        }
    }
}
