//! GPU collectives from NCCL itself (`libnccl.so.2`, shipped in the torch
//! wheel under `nvidia/nccl/lib`), loaded with `dlopen` at run time, so a
//! `--features gpu` build compiles and links without CUDA or NCCL present.
//! Rank 0 makes the NCCL unique id and hands it out through the
//! rendezvous store.
//!
//! Collectives are enqueued on the legacy default CUDA stream (libtorch's
//! current stream unless one is set) and waited for with a device
//! synchronize; a watchdog aborts the communicator (`ncclCommAbort`) when a
//! collective outlives the timeout, which makes the wait return and the
//! collective fail instead of hanging on a dead peer.
//!
//! UNTESTED: no GPU was available when this was written; scripts/gpu-check.sh
//! exercises it (data-parallel equality on 2+ GPUs).

use super::gloo::Store;
use super::ProcessGroup;
use crate::error::{Error, Result};
use std::ffi::{c_void, CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// `ncclUniqueId`: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; 128],
}

type Comm = *mut c_void;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int;
type AllReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    Comm,
    *mut c_void,
) -> c_int;
type Broadcast = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    Comm,
    *mut c_void,
) -> c_int;
type GroupCall = unsafe extern "C" fn() -> c_int;
type CommCall = unsafe extern "C" fn(Comm) -> c_int;
type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;

/// The NCCL entry points this module calls.
struct Api {
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    all_reduce: AllReduce,
    broadcast: Broadcast,
    group_start: GroupCall,
    group_end: GroupCall,
    comm_abort: CommCall,
    comm_destroy: CommCall,
    error_string: ErrorString,
}

fn load_api() -> Result<Api> {
    let names = ["libnccl.so.2", "libnccl.so"];
    let mut handle = std::ptr::null_mut();
    for n in names {
        let c = CString::new(n).map_err(|_| Error::Distributed("library name".into()))?;
        // SAFETY: dlopen with a valid C string.
        handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            break;
        }
    }
    if handle.is_null() {
        return Err(Error::Distributed(
            "cannot load libnccl.so.2: add python3's site-packages/nvidia/nccl/lib to LD_LIBRARY_PATH".into(),
        ));
    }
    let sym = |name: &str| -> Result<*mut c_void> {
        let c = CString::new(name).map_err(|_| Error::Distributed("symbol name".into()))?;
        // SAFETY: live handle, valid C string.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            return Err(Error::Distributed(format!("libnccl has no {name}")));
        }
        Ok(p)
    };
    // SAFETY: each symbol has the C signature of nccl.h (NCCL 2.x).
    unsafe {
        Ok(Api {
            get_unique_id: std::mem::transmute::<*mut c_void, GetUniqueId>(sym("ncclGetUniqueId")?),
            comm_init_rank: std::mem::transmute::<*mut c_void, CommInitRank>(sym(
                "ncclCommInitRank",
            )?),
            all_reduce: std::mem::transmute::<*mut c_void, AllReduce>(sym("ncclAllReduce")?),
            broadcast: std::mem::transmute::<*mut c_void, Broadcast>(sym("ncclBroadcast")?),
            group_start: std::mem::transmute::<*mut c_void, GroupCall>(sym("ncclGroupStart")?),
            group_end: std::mem::transmute::<*mut c_void, GroupCall>(sym("ncclGroupEnd")?),
            comm_abort: std::mem::transmute::<*mut c_void, CommCall>(sym("ncclCommAbort")?),
            comm_destroy: std::mem::transmute::<*mut c_void, CommCall>(sym("ncclCommDestroy")?),
            error_string: std::mem::transmute::<*mut c_void, ErrorString>(sym(
                "ncclGetErrorString",
            )?),
        })
    }
}

/// `ncclDataType_t` of a tensor kind.
fn nccl_type(kind: Kind) -> Result<c_int> {
    Ok(match kind {
        Kind::Int8 => 0,
        Kind::Uint8 => 1,
        Kind::Int => 2,
        Kind::Int64 => 4,
        Kind::Half => 6,
        Kind::Float => 7,
        Kind::Double => 8,
        Kind::BFloat16 => 9,
        other => {
            return Err(Error::Distributed(format!(
                "NCCL cannot reduce {other:?} tensors"
            )))
        }
    })
}

#[derive(Clone, Copy)]
struct SendComm(Comm);
// SAFETY: an NCCL communicator may be aborted from another thread.
unsafe impl Send for SendComm {}

/// An NCCL communicator over the job's ranks, one GPU each.
pub struct NcclGroup {
    api: Api,
    comm: Comm,
    device: Device,
    rank: usize,
    world: usize,
    timeout: Duration,
}

impl std::fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

// SAFETY: the communicator is used from one thread at a time (`&self`
// collectives are issued by the owning rank's thread).
unsafe impl Send for NcclGroup {}

impl NcclGroup {
    /// Create the communicator: rank 0 publishes the unique id under
    /// `prefix` in `store`, every rank joins on `device`.
    pub fn new(
        store: &Store,
        prefix: &str,
        device: Device,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<NcclGroup> {
        let api = load_api()?;
        let key = format!("{prefix}unique_id");
        let id = if rank == 0 {
            let mut id = UniqueId { internal: [0; 128] };
            // SAFETY: valid out-pointer.
            check(
                &api,
                unsafe { (api.get_unique_id)(&mut id) },
                "ncclGetUniqueId",
            )?;
            // SAFETY: UniqueId is 128 plain bytes.
            let bytes: [u8; 128] = unsafe { std::mem::transmute(id.internal) };
            store.set(&key, &bytes)?;
            id
        } else {
            let bytes = store.get(&key)?;
            let arr: [u8; 128] = bytes.try_into().map_err(|_| {
                Error::Distributed("NCCL unique id in the store is not 128 bytes".into())
            })?;
            // SAFETY: as above.
            UniqueId {
                internal: unsafe { std::mem::transmute::<[u8; 128], [c_char; 128]>(arr) },
            }
        };
        // Make `device` current for ncclCommInitRank (it binds to the current device).
        let _ = Tensor::f_zeros([1], (Kind::Float, device))?;
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: valid out-pointer; id by value as in nccl.h.
        check(
            &api,
            unsafe { (api.comm_init_rank)(&mut comm, world as c_int, id, rank as c_int) },
            "ncclCommInitRank",
        )?;
        Ok(NcclGroup {
            api,
            comm,
            device,
            rank,
            world,
            timeout,
        })
    }

    /// Run `enqueue` inside an NCCL group, then wait for the device with a
    /// watchdog that aborts the communicator after the timeout.
    fn run(&self, what: &str, enqueue: impl FnOnce() -> Result<()>) -> Result<()> {
        // SAFETY: plain NCCL calls on a live communicator.
        check(
            &self.api,
            unsafe { (self.api.group_start)() },
            "ncclGroupStart",
        )?;
        let r = enqueue();
        // SAFETY: as above.
        check(&self.api, unsafe { (self.api.group_end)() }, "ncclGroupEnd")?;
        r?;
        let done = Arc::new(AtomicBool::new(false));
        let aborted = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (done, aborted) = (done.clone(), aborted.clone());
            let comm = Mutex::new(SendComm(self.comm));
            let abort = self.api.comm_abort;
            let deadline = Instant::now() + self.timeout;
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    if Instant::now() >= deadline {
                        aborted.store(true, Ordering::Release);
                        if let Ok(c) = comm.lock() {
                            // SAFETY: aborting a live communicator from another thread is allowed.
                            unsafe { abort(c.0) };
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        if aborted.load(Ordering::Acquire) {
            return Err(Error::Distributed(format!(
                "rank {} {what} timed out after {:?}; NCCL communicator aborted",
                self.rank, self.timeout
            )));
        }
        Ok(())
    }
}

fn check(api: &Api, rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: NCCL returns a static string.
    let msg = unsafe { CStr::from_ptr((api.error_string)(rc)) };
    Err(Error::Distributed(format!(
        "{what}: {} (code {rc})",
        msg.to_string_lossy()
    )))
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        // SAFETY: destroys the communicator this group created.
        unsafe { (self.api.comm_destroy)(self.comm) };
    }
}

impl ProcessGroup for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
        self.run("all-reduce", || {
            for t in tensors {
                let ty = nccl_type(t.kind())?;
                let p = t.data_ptr();
                // SAFETY: in-place all-reduce of a contiguous device tensor on the default stream.
                let rc = unsafe {
                    (self.api.all_reduce)(p, p, t.numel(), ty, 0, self.comm, std::ptr::null_mut())
                };
                check(&self.api, rc, "ncclAllReduce")?;
            }
            Ok(())
        })
    }
    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        self.run("broadcast", || {
            for t in tensors {
                let ty = nccl_type(t.kind())?;
                let p = t.data_ptr();
                // SAFETY: in-place broadcast of a contiguous device tensor.
                let rc = unsafe {
                    (self.api.broadcast)(
                        p,
                        p,
                        t.numel(),
                        ty,
                        root as c_int,
                        self.comm,
                        std::ptr::null_mut(),
                    )
                };
                check(&self.api, rc, "ncclBroadcast")?;
            }
            Ok(())
        })
    }
    fn barrier(&self) -> Result<()> {
        let t = Tensor::f_zeros([1], (Kind::Float, self.device))?;
        self.all_reduce_sum(std::slice::from_ref(&t))
    }
}
