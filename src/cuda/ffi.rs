//! The C ABI of `csrc/rlsd_cuda.cpp` (built with the `gpu` feature) and thin
//! checked calls over it.

use super::Raw;
use crate::error::{Error, Result};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use tch::Tensor;

/// `rlsd_event`, opaque.
#[repr(C)]
pub(super) struct CEvent {
    _private: [u8; 0],
}

extern "C" {
    fn rlsd_cuda_last_error() -> *const c_char;
    fn rlsd_cuda_pool_stream(device: i8, high_priority: c_int, id: *mut i64) -> c_int;
    fn rlsd_cuda_current_stream(device: i8, id: *mut i64) -> c_int;
    fn rlsd_cuda_set_current_stream(id: i64, device: i8) -> c_int;
    fn rlsd_cuda_record_event(id: i64, device: i8, out: *mut *mut CEvent) -> c_int;
    fn rlsd_cuda_wait_event(id: i64, device: i8, e: *mut CEvent) -> c_int;
    fn rlsd_cuda_event_synchronize(e: *mut CEvent) -> c_int;
    fn rlsd_cuda_event_free(e: *mut CEvent);
    fn rlsd_cuda_stream_synchronize(id: i64, device: i8) -> c_int;
    fn rlsd_cuda_device_synchronize(device: i8) -> c_int;
    fn rlsd_cuda_record_tensor_stream(t: *const torch_sys::C_tensor, id: i64, device: i8) -> c_int;
}

/// The shim's error of the last failed call on this thread, with `what`.
fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local message, valid
    // until the next call on this thread.
    let msg = unsafe { CStr::from_ptr(rlsd_cuda_last_error()) }
        .to_string_lossy()
        .into_owned();
    let first = msg.lines().next().unwrap_or_default().to_string();
    Err(Error::Cuda(format!("{what}: {first}")))
}

/// A recorded CUDA event, freed on drop.
#[derive(Debug)]
pub(super) struct RawEvent(*mut CEvent);

// SAFETY: a CUDA event may be waited on, queried and destroyed from any
// thread; the shim never mutates it after recording.
unsafe impl Send for RawEvent {}
// SAFETY: as above; every call through `&RawEvent` is thread-safe in CUDA.
unsafe impl Sync for RawEvent {}

impl Drop for RawEvent {
    fn drop(&mut self) {
        // SAFETY: the pointer came from rlsd_cuda_record_event, freed once.
        unsafe { rlsd_cuda_event_free(self.0) }
    }
}

pub(super) fn pool_stream(device: i8) -> Result<i64> {
    let mut id = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { rlsd_cuda_pool_stream(device, 0, &mut id) },
        &format!("stream from the pool of cuda:{device}"),
    )?;
    Ok(id)
}

pub(super) fn current_stream(device: i8) -> Result<i64> {
    let mut id = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { rlsd_cuda_current_stream(device, &mut id) },
        &format!("current stream of cuda:{device}"),
    )?;
    Ok(id)
}

pub(super) fn set_current_stream(s: Raw) -> Result<()> {
    // SAFETY: plain values.
    check(
        unsafe { rlsd_cuda_set_current_stream(s.id, s.device) },
        &format!("setting the current stream of cuda:{}", s.device),
    )
}

pub(super) fn record_event(s: Raw) -> Result<RawEvent> {
    let mut e = std::ptr::null_mut();
    // SAFETY: valid out pointer; on success it holds a new event we own.
    check(
        unsafe { rlsd_cuda_record_event(s.id, s.device, &mut e) },
        &format!("recording an event on cuda:{}", s.device),
    )?;
    Ok(RawEvent(e))
}

pub(super) fn wait_event(s: Raw, e: &RawEvent) -> Result<()> {
    // SAFETY: a live event (borrowed for the call).
    check(
        unsafe { rlsd_cuda_wait_event(s.id, s.device, e.0) },
        &format!("waiting on an event on cuda:{}", s.device),
    )
}

pub(super) fn event_synchronize(e: &RawEvent) -> Result<()> {
    // SAFETY: a live event.
    check(
        unsafe { rlsd_cuda_event_synchronize(e.0) },
        "synchronizing an event",
    )
}

pub(super) fn stream_synchronize(s: Raw) -> Result<()> {
    // SAFETY: plain values.
    check(
        unsafe { rlsd_cuda_stream_synchronize(s.id, s.device) },
        &format!("synchronizing a stream of cuda:{}", s.device),
    )
}

pub(super) fn device_synchronize(device: i8) -> Result<()> {
    // SAFETY: plain value.
    check(
        unsafe { rlsd_cuda_device_synchronize(device) },
        &format!("synchronizing cuda:{device}"),
    )
}

pub(super) fn record_tensor_stream(t: &Tensor, s: Raw) -> Result<()> {
    // SAFETY: `t` is a live tensor for the call.
    check(
        unsafe { rlsd_cuda_record_tensor_stream(t.as_ptr(), s.id, s.device) },
        &format!("recording a tensor's use on a stream of cuda:{}", s.device),
    )
}
