//! How full the kernel→agent ring buffer (`EVENTS`) is, for the agent's health metrics:
//! the producer and consumer positions the kernel keeps in the ring's first two pages,
//! read through a read-only mapping of the map (aya's reader keeps them private). The
//! difference is the bytes written and not yet read; near the size, records get lost.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

/// Why the positions cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub enum RingUsageError {
    /// Duplicating the map's descriptor failed.
    #[error("duplicating the ring buffer's descriptor: {0}")]
    Dup(#[source] std::io::Error),
    /// `mmap` refused.
    #[error("mapping the ring buffer's positions: {0}")]
    Map(#[source] std::io::Error),
}

/// A read-only view of one ring buffer's positions.
pub struct RingUsage {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    page: usize,
    size: u64,
    _fd: OwnedFd,
}

// SAFETY: the mappings are read-only shared memory read with atomic loads only.
unsafe impl Send for RingUsage {}
// SAFETY: as above; no interior mutation through the pointers.
unsafe impl Sync for RingUsage {}

fn map_page(fd: &OwnedFd, offset: usize, page: usize) -> Result<*mut libc::c_void, RingUsageError> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh read-only shared mapping of one page of a ring buffer map; the
    // kernel allows PROT_READ mappings of both position pages.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(RingUsageError::Map(std::io::Error::last_os_error()));
    }
    Ok(p)
}

impl RingUsage {
    /// Maps the positions of the ring buffer `ring` (of `size` bytes).
    pub fn new(ring: &impl AsFd, size: u32) -> Result<Self, RingUsageError> {
        let fd = ring
            .as_fd()
            .try_clone_to_owned()
            .map_err(RingUsageError::Dup)?;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let consumer = map_page(&fd, 0, page)?;
        let producer = match map_page(&fd, page, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: `consumer` was mapped above with this length.
                unsafe { libc::munmap(consumer, page) };
                return Err(e);
            }
        };
        Ok(RingUsage {
            consumer,
            producer,
            page,
            size: size.into(),
            _fd: fd,
        })
    }

    /// (bytes written by the kernel and not yet read, the ring's size).
    pub fn usage(&self) -> (u64, u64) {
        // SAFETY: both pointers map at least 8 bytes, page-aligned, for `self`'s life; the
        // kernel updates the positions atomically.
        let (cons, prod) = unsafe {
            (
                (*(self.consumer as *const AtomicU64)).load(Ordering::Acquire),
                (*(self.producer as *const AtomicU64)).load(Ordering::Acquire),
            )
        };
        (prod.saturating_sub(cons).min(self.size), self.size)
    }
}

impl Drop for RingUsage {
    fn drop(&mut self) {
        // SAFETY: both were mapped in `new` with this length and are not used after.
        unsafe {
            libc::munmap(self.consumer, self.page);
            libc::munmap(self.producer, self.page);
        }
    }
}
