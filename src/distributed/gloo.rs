//! The rendezvous store and the CPU process group: libtorch's c10d
//! `TCPStore` and `ProcessGroupGloo`, reached through the C ABI of
//! `csrc/rlsd_dist.cpp` (compiled by build.rs). Tensors cross as the
//! `at::Tensor*` that tch wraps.

use super::ProcessGroup;
use crate::error::{Error, Result};
use std::time::Duration;
use tch::Tensor;

#[cfg(not(rlsd_no_gloo))]
mod ffi {
    use std::os::raw::{c_char, c_int};

    #[repr(C)]
    pub(super) struct RawStore {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub(super) struct RawPg {
        _private: [u8; 0],
    }
    /// `at::Tensor`, opaque (tch's `C_tensor`).
    pub(super) type RawTensor = torch_sys::C_tensor;

    extern "C" {
        pub(super) fn rlsd_dist_last_error() -> *const c_char;
        pub(super) fn rlsd_store_tcp(
            host: *const c_char,
            port: u16,
            is_server: c_int,
            timeout_ms: i64,
            bound_port: *mut u16,
            out: *mut *mut RawStore,
        ) -> c_int;
        pub(super) fn rlsd_store_free(s: *mut RawStore);
        pub(super) fn rlsd_store_set(
            s: *mut RawStore,
            key: *const c_char,
            value: *const u8,
            len: usize,
        ) -> c_int;
        pub(super) fn rlsd_store_get(
            s: *mut RawStore,
            key: *const c_char,
            out: *mut u8,
            cap: usize,
            len: *mut usize,
        ) -> c_int;
        pub(super) fn rlsd_pg_gloo(
            s: *mut RawStore,
            prefix: *const c_char,
            bind: *const c_char,
            rank: c_int,
            world: c_int,
            timeout_ms: i64,
            out: *mut *mut RawPg,
        ) -> c_int;
        pub(super) fn rlsd_pg_free(p: *mut RawPg);
        pub(super) fn rlsd_pg_allreduce_sum(
            p: *mut RawPg,
            tensors: *const *const RawTensor,
            n: c_int,
        ) -> c_int;
        pub(super) fn rlsd_pg_broadcast(
            p: *mut RawPg,
            tensors: *const *const RawTensor,
            n: c_int,
            root: c_int,
        ) -> c_int;
        pub(super) fn rlsd_pg_barrier(p: *mut RawPg) -> c_int;
    }
}

/// The error of the last failed shim call on this thread.
#[cfg(not(rlsd_no_gloo))]
fn shim_error(what: &str) -> Error {
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string.
    let msg = unsafe { std::ffi::CStr::from_ptr(ffi::rlsd_dist_last_error()) };
    Error::Distributed(format!("{what}: {}", msg.to_string_lossy().trim()))
}

#[cfg(rlsd_no_gloo)]
fn no_gloo() -> Error {
    Error::Distributed(
        "this binary was built without gloo's headers, so it has no c10d process group; \
         run scripts/setup_gloo.sh (or set RLSD_GLOO_INCLUDE) and rebuild"
            .into(),
    )
}

#[cfg(not(rlsd_no_gloo))]
fn cstr(s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| Error::Distributed(format!("{s:?} holds a NUL byte")))
}

#[cfg(not(rlsd_no_gloo))]
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A c10d `TCPStore`: the key-value rendezvous every rank connects to.
#[derive(Debug)]
pub struct Store {
    #[cfg(not(rlsd_no_gloo))]
    raw: *mut ffi::RawStore,
    port: u16,
}

// SAFETY: c10d's TCPStore is thread-safe; the handle is only freed on drop.
unsafe impl Send for Store {}
// SAFETY: as above; every method takes the store's own lock in C++.
unsafe impl Sync for Store {}

impl Store {
    /// Host the store on `host:port` (`port` 0: a free port, see
    /// [`Store::port`]). The server is also a client.
    pub fn server(host: &str, port: u16, timeout: Duration) -> Result<Store> {
        Store::open(host, port, true, timeout)
    }

    /// Connect to the store at `host:port`, retrying until `timeout`.
    pub fn client(host: &str, port: u16, timeout: Duration) -> Result<Store> {
        Store::open(host, port, false, timeout)
    }

    #[cfg(not(rlsd_no_gloo))]
    fn open(host: &str, port: u16, server: bool, timeout: Duration) -> Result<Store> {
        let h = cstr(host)?;
        let mut raw = std::ptr::null_mut();
        let mut bound = 0u16;
        // SAFETY: valid C string and out-pointers.
        let rc = unsafe {
            ffi::rlsd_store_tcp(
                h.as_ptr(),
                port,
                i32::from(server),
                millis(timeout),
                &mut bound,
                &mut raw,
            )
        };
        if rc != 0 {
            let role = if server { "hosting" } else { "connecting to" };
            return Err(shim_error(&format!(
                "{role} the TCP store at {host}:{port}"
            )));
        }
        Ok(Store { raw, port: bound })
    }

    #[cfg(rlsd_no_gloo)]
    fn open(_host: &str, _port: u16, _server: bool, _timeout: Duration) -> Result<Store> {
        Err(no_gloo())
    }

    /// The port the store listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Set `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        #[cfg(not(rlsd_no_gloo))]
        {
            let k = cstr(key)?;
            // SAFETY: live handle, valid pointers.
            let rc =
                unsafe { ffi::rlsd_store_set(self.raw, k.as_ptr(), value.as_ptr(), value.len()) };
            if rc != 0 {
                return Err(shim_error(&format!("store set `{key}`")));
            }
            Ok(())
        }
        #[cfg(rlsd_no_gloo)]
        {
            let _ = (key, value);
            Err(no_gloo())
        }
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        #[cfg(not(rlsd_no_gloo))]
        {
            let k = cstr(key)?;
            let mut buf = vec![0u8; 256];
            loop {
                let mut len = 0usize;
                // SAFETY: live handle; `buf` has `buf.len()` writable bytes.
                let rc = unsafe {
                    ffi::rlsd_store_get(self.raw, k.as_ptr(), buf.as_mut_ptr(), buf.len(), &mut len)
                };
                if rc != 0 {
                    return Err(shim_error(&format!("store get `{key}`")));
                }
                if len <= buf.len() {
                    buf.truncate(len);
                    return Ok(buf);
                }
                buf = vec![0u8; len];
            }
        }
        #[cfg(rlsd_no_gloo)]
        {
            let _ = key;
            Err(no_gloo())
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        #[cfg(not(rlsd_no_gloo))]
        // SAFETY: the handle came from rlsd_store_tcp and is freed once.
        unsafe {
            ffi::rlsd_store_free(self.raw)
        }
    }
}

/// A c10d `ProcessGroupGloo`: CPU collectives over TCP.
#[derive(Debug)]
pub struct GlooGroup {
    #[cfg(not(rlsd_no_gloo))]
    raw: *mut ffi::RawPg,
    rank: usize,
    world: usize,
}

// SAFETY: c10d process groups may be called from any thread; collectives
// are issued from one thread at a time by the `&self` methods' callers.
unsafe impl Send for GlooGroup {}

impl GlooGroup {
    /// Join the group of `world` ranks as `rank`, keys under `prefix` in
    /// `store`. `bind`: the address this rank's Gloo device listens on
    /// (`""`: this host's name, `"if:eth0"`: an interface). Every
    /// collective fails after `timeout`.
    pub fn new(
        store: &Store,
        prefix: &str,
        bind: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<GlooGroup> {
        if world == 0 || rank >= world {
            return Err(Error::Distributed(format!(
                "rank {rank} is not in a world of {world}"
            )));
        }
        #[cfg(not(rlsd_no_gloo))]
        {
            let (p, b) = (cstr(prefix)?, cstr(bind)?);
            let mut raw = std::ptr::null_mut();
            // SAFETY: live store, valid C strings and out-pointer.
            let rc = unsafe {
                ffi::rlsd_pg_gloo(
                    store.raw,
                    p.as_ptr(),
                    b.as_ptr(),
                    rank as i32,
                    world as i32,
                    millis(timeout),
                    &mut raw,
                )
            };
            if rc != 0 {
                return Err(shim_error(&format!(
                    "rank {rank} of {world} joining the gloo group"
                )));
            }
            Ok(GlooGroup { raw, rank, world })
        }
        #[cfg(rlsd_no_gloo)]
        {
            let _ = (store, prefix, bind, timeout);
            Err(no_gloo())
        }
    }

    #[cfg(not(rlsd_no_gloo))]
    fn pointers(tensors: &[Tensor]) -> Result<Vec<*const ffi::RawTensor>> {
        for t in tensors {
            if !t.is_contiguous() {
                return Err(Error::Distributed(
                    "collective on a non-contiguous tensor".into(),
                ));
            }
        }
        Ok(tensors.iter().map(|t| t.as_ptr()).collect())
    }
}

impl Drop for GlooGroup {
    fn drop(&mut self) {
        #[cfg(not(rlsd_no_gloo))]
        // SAFETY: the handle came from rlsd_pg_gloo and is freed once.
        unsafe {
            ffi::rlsd_pg_free(self.raw)
        }
    }
}

impl ProcessGroup for GlooGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn backend(&self) -> &'static str {
        "gloo"
    }

    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        #[cfg(not(rlsd_no_gloo))]
        {
            let ptrs = GlooGroup::pointers(tensors)?;
            // SAFETY: live group; the tensors outlive the call (it waits).
            let rc =
                unsafe { ffi::rlsd_pg_allreduce_sum(self.raw, ptrs.as_ptr(), ptrs.len() as i32) };
            if rc != 0 {
                return Err(shim_error(&format!("rank {} all-reduce", self.rank)));
            }
            Ok(())
        }
        #[cfg(rlsd_no_gloo)]
        Err(no_gloo())
    }

    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if root >= self.world {
            return Err(Error::Distributed(format!(
                "broadcast root {root} of {} ranks",
                self.world
            )));
        }
        if tensors.is_empty() {
            return Ok(());
        }
        #[cfg(not(rlsd_no_gloo))]
        {
            let ptrs = GlooGroup::pointers(tensors)?;
            // SAFETY: as in all_reduce_sum.
            let rc = unsafe {
                ffi::rlsd_pg_broadcast(self.raw, ptrs.as_ptr(), ptrs.len() as i32, root as i32)
            };
            if rc != 0 {
                return Err(shim_error(&format!(
                    "rank {} broadcast from {root}",
                    self.rank
                )));
            }
            Ok(())
        }
        #[cfg(rlsd_no_gloo)]
        Err(no_gloo())
    }

    fn barrier(&self) -> Result<()> {
        #[cfg(not(rlsd_no_gloo))]
        {
            // SAFETY: live group.
            if unsafe { ffi::rlsd_pg_barrier(self.raw) } != 0 {
                return Err(shim_error(&format!("rank {} barrier", self.rank)));
            }
            Ok(())
        }
        #[cfg(rlsd_no_gloo)]
        Err(no_gloo())
    }
}
