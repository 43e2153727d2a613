//! CUDA streams and events for the actor runtime (docs/RUNTIME.md, "CUDA
//! streams").
//!
//! tch has no stream API; `csrc/rlsd_cuda.cpp` exposes libtorch's (a stream
//! from the pool, the thread's current stream, events, synchronisation) and
//! this module wraps it safely:
//!
//! - [`Stream`]: one CUDA stream of one device, or *no stream*
//!   ([`Stream::none`]): what a CPU device gets, and every device in a build
//!   without the `gpu` feature. On no stream every call is a no-op and work
//!   runs where it always did (the CPU, or libtorch's default stream).
//! - [`Stream::enter`]: makes the stream the calling thread's current stream
//!   until the returned [`StreamGuard`] drops, which restores the previous
//!   one. libtorch launches every kernel of this thread on that device on
//!   the current stream.
//! - [`Event`]: recorded on a stream after some work; another stream
//!   [`Stream::wait`]s for it (on the device, the host does not block).
//!   Shareable between threads.
//! - [`Stream::keep_alive`]: tells the caching allocator that a tensor made
//!   on another stream is read on this one, so its memory is not reused
//!   before that read is done.

use crate::error::Result;
use tch::{Device, Tensor};

#[cfg(rlsd_cuda_shim)]
mod ffi;

/// A stream as c10 packs it: its id and its device's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(rlsd_cuda_shim), allow(dead_code))]
struct Raw {
    id: i64,
    device: i8,
}

/// A CUDA stream, or no stream (CPU devices; builds without the `gpu`
/// feature). Copy it freely: it names a stream libtorch owns for the life of
/// the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stream {
    raw: Option<Raw>,
}

impl Stream {
    /// No stream: every call on it is a no-op.
    pub const fn none() -> Stream {
        Stream { raw: None }
    }

    /// Whether this names a CUDA stream (false for [`Stream::none`]).
    pub fn is_cuda(&self) -> bool {
        self.raw.is_some()
    }

    /// The device of a CUDA stream (`None` for no stream).
    pub fn device(&self) -> Option<Device> {
        self.raw.map(|r| Device::Cuda(r.device as usize))
    }

    /// A stream from libtorch's pool for `device` (a different one on each
    /// call, round-robin over the pool): no stream for a CPU device or in a
    /// build without the `gpu` feature.
    pub fn from_pool(device: Device) -> Result<Stream> {
        match device {
            #[cfg(rlsd_cuda_shim)]
            Device::Cuda(i) => Stream::of_shim(i, ffi::pool_stream),
            _ => Ok(Stream::none()),
        }
    }

    /// The calling thread's current stream on `device` (libtorch's default
    /// stream unless one was entered): no stream for a CPU device or in a
    /// build without the `gpu` feature.
    pub fn current(device: Device) -> Result<Stream> {
        match device {
            #[cfg(rlsd_cuda_shim)]
            Device::Cuda(i) => Stream::of_shim(i, ffi::current_stream),
            _ => Ok(Stream::none()),
        }
    }

    /// The stream `get` returns for CUDA device `index`.
    #[cfg(rlsd_cuda_shim)]
    fn of_shim(index: usize, get: fn(i8) -> Result<i64>) -> Result<Stream> {
        let device = device_index(index)?;
        Ok(Stream {
            raw: Some(Raw {
                id: get(device)?,
                device,
            }),
        })
    }

    /// Make this the calling thread's current stream on its device until
    /// the guard drops (which restores the previous one). Call it at the
    /// start of every blocking section that launches work for an actor: the
    /// setting belongs to the OS thread, and tokio's blocking threads are
    /// shared.
    pub fn enter(&self) -> Result<StreamGuard> {
        let previous = match self.raw {
            #[cfg(rlsd_cuda_shim)]
            Some(r) => {
                let prev = ffi::current_stream(r.device)?;
                ffi::set_current_stream(r)?;
                Some(Raw {
                    id: prev,
                    device: r.device,
                })
            }
            _ => None,
        };
        Ok(StreamGuard {
            previous,
            _thread_bound: std::marker::PhantomData,
        })
    }

    /// An event recorded on this stream: done when all work queued on it so
    /// far is done. On no stream, an event that is always done.
    pub fn record(&self) -> Result<Event> {
        match self.raw {
            #[cfg(rlsd_cuda_shim)]
            Some(r) => Ok(Event {
                raw: Some(std::sync::Arc::new(ffi::record_event(r)?)),
            }),
            _ => Ok(Event::done()),
        }
    }

    /// Work queued on this stream from now on waits for `event` (on the
    /// device; the calling thread does not block). A no-op when either side
    /// is no stream / no event: CPU work and host copies are complete when
    /// the call that made them returns.
    pub fn wait(&self, event: &Event) -> Result<()> {
        match (self.raw, &event.raw) {
            #[cfg(rlsd_cuda_shim)]
            (Some(r), Some(e)) => ffi::wait_event(r, e),
            _ => {
                let _ = event;
                Ok(())
            }
        }
    }

    /// Block the calling thread until the work queued on this stream is done.
    pub fn synchronize(&self) -> Result<()> {
        match self.raw {
            #[cfg(rlsd_cuda_shim)]
            Some(r) => ffi::stream_synchronize(r),
            _ => Ok(()),
        }
    }

    /// Tell libtorch's caching allocator that `tensor` (a CUDA tensor made
    /// on another stream) is used by work queued on this stream, so that
    /// when it is freed its memory is not reused before that work is done.
    /// A no-op on no stream and for CPU tensors.
    pub fn keep_alive(&self, tensor: &Tensor) -> Result<()> {
        match self.raw {
            #[cfg(rlsd_cuda_shim)]
            Some(r) => ffi::record_tensor_stream(tensor, r),
            _ => {
                let _ = tensor;
                Ok(())
            }
        }
    }
}

/// Block the calling thread until all work on `device` is done (every
/// stream). A no-op on the CPU and in a build without the `gpu` feature.
pub fn synchronize_device(device: Device) -> Result<()> {
    match device {
        #[cfg(rlsd_cuda_shim)]
        Device::Cuda(i) => ffi::device_synchronize(device_index(i)?),
        _ => Ok(()),
    }
}

/// Whether this build sets CUDA streams at all (the `gpu` feature, with the
/// shim compiled).
pub const fn streams_enabled() -> bool {
    cfg!(rlsd_cuda_shim)
}

#[cfg(rlsd_cuda_shim)]
fn device_index(i: usize) -> Result<i8> {
    i8::try_from(i).map_err(|_| crate::Error::Cuda(format!("device index {i} out of range")))
}

/// Restores the thread's previous current stream when dropped. Not `Send`:
/// it belongs to the thread that entered the stream.
#[derive(Debug)]
#[must_use = "the stream is current only while the guard lives"]
pub struct StreamGuard {
    #[cfg_attr(not(rlsd_cuda_shim), allow(dead_code))]
    previous: Option<Raw>,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        #[cfg(rlsd_cuda_shim)]
        if let Some(prev) = self.previous {
            if let Err(e) = ffi::set_current_stream(prev) {
                tracing::error!("restoring the thread's CUDA stream: {e}");
            }
        }
    }
}

/// Work recorded on a stream, to order another stream after it
/// ([`Stream::wait`]) or to wait for it on the host
/// ([`Event::synchronize`]). Cheap to clone; shareable between threads.
#[derive(Debug, Clone, Default)]
pub struct Event {
    #[cfg(rlsd_cuda_shim)]
    raw: Option<std::sync::Arc<ffi::RawEvent>>,
    #[cfg(not(rlsd_cuda_shim))]
    raw: Option<std::convert::Infallible>,
}

impl Event {
    /// An event that is always done (what CPU work and no stream record).
    pub fn done() -> Event {
        Event { raw: None }
    }

    /// Whether this is a recorded CUDA event (false for [`Event::done`]).
    pub fn is_cuda(&self) -> bool {
        self.raw.is_some()
    }

    /// Block the calling thread until the recorded work is done.
    pub fn synchronize(&self) -> Result<()> {
        match &self.raw {
            #[cfg(rlsd_cuda_shim)]
            Some(e) => ffi::event_synchronize(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU every call is a no-op that succeeds, whatever the build.
    #[test]
    fn cpu_devices_get_no_stream_and_every_call_is_a_no_op() {
        let s = Stream::from_pool(Device::Cpu).unwrap();
        assert_eq!(s, Stream::none());
        assert!(!s.is_cuda());
        assert_eq!(s.device(), None);
        assert_eq!(Stream::current(Device::Cpu).unwrap(), Stream::none());
        let before = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let out = {
            let _g = s.enter().unwrap();
            let e = s.record().unwrap();
            assert!(!e.is_cuda());
            s.wait(&e).unwrap();
            e.synchronize().unwrap();
            s.keep_alive(&before).unwrap();
            s.synchronize().unwrap();
            &before * 2.0
        };
        assert_eq!(Vec::<f32>::try_from(&out).unwrap(), vec![2.0, 4.0, 6.0]);
        synchronize_device(Device::Cpu).unwrap();
    }
}
