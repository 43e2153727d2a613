// C ABI over libtorch's CUDA streams and events, for the actor runtime: a
// stream from libtorch's pool, the calling thread's current stream, an
// event recorded on a stream, a stream waiting on an event, and
// synchronisation. Rust (src/cuda/) holds the handles; tensors cross as
// `at::Tensor*`, the pointer tch wraps.
//
// Compiled by build.rs only with the `gpu` cargo feature. It goes through
// c10's device-generic interface (`DeviceGuardImplInterface`, `c10::Event`,
// `c10::Stream`), which libc10_cuda implements for CUDA with exactly the
// c10/cuda calls (`getStreamFromGlobalPool` is `getStreamFromPool`,
// `exchangeStream` is `setCurrentCUDAStream`, events are `cudaEvent_t`s).
// Why not include c10/cuda/CUDAStream.h directly: it includes
// `cuda_runtime_api.h`, which needs `crt/host_defines.h`, and the torch
// wheel's nvidia/cu13/include does not ship `crt/` (checked with torch
// 2.11). This way the shim needs no CUDA header and references no CUDA
// runtime symbol; the CUDA implementation is whatever libtorch_cuda
// registered at load time (build.rs keeps it linked), and a libtorch
// without CUDA makes every call fail with c10's message.
//
// A stream crosses the ABI as (stream id, device index): c10's packed form.
//
// Every function returns 0 on success and -1 on failure; the message of the
// last failure on the calling thread is `rlsd_cuda_last_error()`.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cstdint>
#include <string>

#include "rlsd_guard.h"

namespace {

const c10::impl::DeviceGuardImplInterface* cuda() {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
}

c10::Device device_of(int8_t index) {
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

c10::Stream unpack(int64_t id, int8_t device) {
  return c10::Stream::unpack3(
      id, static_cast<c10::DeviceIndex>(device), c10::DeviceType::CUDA);
}

}  // namespace

// An event recorded once; freed by rlsd_cuda_event_free.
struct rlsd_event {
  c10::Event event{c10::DeviceType::CUDA};
};

extern "C" {

const char* rlsd_cuda_last_error() {
  return last_error.c_str();
}

// A stream from libtorch's pool for `device` (round-robin over the pool's
// streams, which are created non-blocking: no implicit ordering with the
// default stream).
int rlsd_cuda_pool_stream(int8_t device, int high_priority, int64_t* id) {
  return guarded([&] {
    *id = cuda()->getStreamFromGlobalPool(device_of(device), high_priority != 0).id();
  });
}

// The calling thread's current stream on `device`.
int rlsd_cuda_current_stream(int8_t device, int64_t* id) {
  return guarded([&] { *id = cuda()->getStream(device_of(device)).id(); });
}

// Make (id, device) the calling thread's current stream on its device
// (the thread's current device is left as it is).
int rlsd_cuda_set_current_stream(int64_t id, int8_t device) {
  return guarded([&] { cuda()->exchangeStream(unpack(id, device)); });
}

// Record a new event on the stream (after all work queued on it so far).
int rlsd_cuda_record_event(int64_t id, int8_t device, rlsd_event** out) {
  return guarded([&] {
    auto e = new rlsd_event();
    try {
      e->event.record(unpack(id, device));
    } catch (...) {
      delete e;
      throw;
    }
    *out = e;
  });
}

// Work queued on the stream from now on waits for the event (device side;
// the calling thread does not block).
int rlsd_cuda_wait_event(int64_t id, int8_t device, rlsd_event* e) {
  return guarded([&] { e->event.block(unpack(id, device)); });
}

// Block the calling thread until the event's work is done.
int rlsd_cuda_event_synchronize(rlsd_event* e) {
  return guarded([&] { e->event.synchronize(); });
}

void rlsd_cuda_event_free(rlsd_event* e) {
  delete e;
}

// Block the calling thread until the stream's queued work is done.
int rlsd_cuda_stream_synchronize(int64_t id, int8_t device) {
  return guarded([&] { unpack(id, device).synchronize(); });
}

// Block the calling thread until all work on `device` is done.
int rlsd_cuda_device_synchronize(int8_t device) {
  return guarded([&] {
    cuda()->synchronizeDevice(static_cast<c10::DeviceIndex>(device));
  });
}

// Tell the caching allocator that the tensor's memory is in use on the
// stream, so that freeing the tensor does not hand its block to other work
// before the stream's queued uses are done. Only CUDA tensors; others are
// left alone.
int rlsd_cuda_record_tensor_stream(const at::Tensor* t, int64_t id, int8_t device) {
  return guarded([&] {
    if (t->defined() && t->is_cuda()) {
      t->record_stream(unpack(id, device));
    }
  });
}

}  // extern "C"
