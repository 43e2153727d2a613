// C ABI over libtorch's c10d: a TCPStore for the rendezvous and a
// ProcessGroupGloo for CPU collectives. Rust (src/dist/gloo.rs) holds the
// handles; tensors cross as `at::Tensor*`, the same pointer tch wraps.
//
// Every function returns 0 on success and -1 on failure; the message of the
// last failure on the calling thread is `rlsd_dist_last_error()`.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "rlsd_guard.h"

namespace {

// Wait for every piece of work, in order; the first failure is rethrown
// after all have finished or failed, so no work is left running.
void wait_all(
    std::vector<c10::intrusive_ptr<c10d::Work>>& works,
    std::chrono::milliseconds timeout) {
  std::exception_ptr first;
  for (auto& w : works) {
    try {
      w->wait(timeout);
    } catch (...) {
      if (!first) {
        first = std::current_exception();
      }
    }
  }
  if (first) {
    std::rethrow_exception(first);
  }
}

}  // namespace

struct rlsd_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct rlsd_pg {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::chrono::milliseconds timeout;
};

extern "C" {

const char* rlsd_dist_last_error() {
  return last_error.c_str();
}

// A TCPStore client, or the server when `is_server` (then `port` 0 picks a
// free port). `*bound_port` receives the port in use.
int rlsd_store_tcp(
    const char* host,
    uint16_t port,
    int is_server,
    int64_t timeout_ms,
    uint16_t* bound_port,
    rlsd_store** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *bound_port = store->getPort();
    *out = new rlsd_store{store};
  });
}

void rlsd_store_free(rlsd_store* s) {
  delete s;
}

int rlsd_store_set(
    rlsd_store* s,
    const char* key,
    const uint8_t* value,
    size_t len) {
  return guarded([&] {
    s->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
  });
}

// Blocks until `key` exists (or the store's timeout). Copies at most `cap`
// bytes to `out`; `*len` receives the full length.
int rlsd_store_get(
    rlsd_store* s,
    const char* key,
    uint8_t* out,
    size_t cap,
    size_t* len) {
  return guarded([&] {
    auto v = s->store->get(std::string(key));
    *len = v.size();
    std::memcpy(out, v.data(), std::min(cap, v.size()));
  });
}

// Atomic add on a counter key; `*result` receives the new value.
int rlsd_store_add(rlsd_store* s, const char* key, int64_t delta, int64_t* result) {
  return guarded([&] { *result = s->store->add(std::string(key), delta); });
}

// A Gloo process group of `world` ranks over `store`, keys under `prefix`.
// `bind`: "" resolves this host's name (loopback if that fails),
// "if:NAME" binds to interface NAME, anything else is a host name/address.
int rlsd_pg_gloo(
    rlsd_store* s,
    const char* prefix,
    const char* bind,
    int rank,
    int world,
    int64_t timeout_ms,
    rlsd_pg** out) {
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string b(bind);
    if (b.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    } else if (b.rfind("if:", 0) == 0) {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(b.substr(3)));
    } else {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(b));
    }
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s->store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        prefixed, rank, world, opts);
    *out = new rlsd_pg{pg, timeout};
  });
}

void rlsd_pg_free(rlsd_pg* p) {
  delete p;
}

// In-place sum over ranks of each of `n` tensors (one collective each, all
// in flight together), then wait for all of them.
int rlsd_pg_allreduce_sum(rlsd_pg* p, at::Tensor** tensors, int n) {
  return guarded([&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = p->timeout;
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(p->pg->allreduce(one, opts));
    }
    wait_all(works, p->timeout);
  });
}

// In-place broadcast of each of `n` tensors from rank `root`.
int rlsd_pg_broadcast(rlsd_pg* p, at::Tensor** tensors, int n, int root) {
  return guarded([&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = p->timeout;
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(p->pg->broadcast(one, opts));
    }
    wait_all(works, p->timeout);
  });
}

int rlsd_pg_barrier(rlsd_pg* p) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = p->timeout;
    auto w = p->pg->barrier(opts);
    w->wait(p->timeout);
  });
}

}  // extern "C"
