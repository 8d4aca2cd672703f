// boxseg_thread_pool_failure: makes the creation of a ThreadPool worker fail on purpose and checks that the
// constructor rethrows promptly with every started worker stopped and joined (no hang, no std::terminate), and
// that pools still work afterwards. Built by the package build (BOXSEG_RUNTIME_TESTS) and run by
// tests/runtime/test_thread_pool_failure.py under a timeout.
//
// usage: boxseg_thread_pool_failure [THREADS]   (default 16; each worker index 1..THREADS-1 is made to fail once)
// Prints one line per case and "all passed" last; exits 1 on the first failed check.
#define BOXSEG_THREAD_POOL_TESTING 1

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <system_error>

#include "thread_pool.h"

namespace {

int fail(const std::string& what) {
  std::cout << "FAILED: " << what << std::endl;
  return 1;
}

// The pool must still run work correctly: sum 0..n-1 over all its threads.
bool pool_works(int threads) {
  boxseg::ThreadPool pool(threads);
  std::atomic<int64_t> sum{0};
  const int64_t n = 1000;
  pool.parallel_for(n, [&](int64_t i) { sum += i; });
  return sum.load() == n * (n - 1) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 16;
  if (threads < 2) return fail("THREADS must be >= 2");
  namespace hook = boxseg::thread_pool_testing;
  for (int fail_at = 1; fail_at < threads; ++fail_at) {
    int attempts = 0;
    hook::before_worker_start = [&](int index) {
      ++attempts;
      if (index == fail_at) throw std::system_error(EAGAIN, std::generic_category(), "injected: cannot start thread");
    };
    bool threw = false;
    try {
      boxseg::ThreadPool pool(threads);
    } catch (const std::system_error& e) {
      threw = std::string(e.what()).find("injected") != std::string::npos;
    }
    hook::before_worker_start = nullptr;
    if (!threw) return fail("ThreadPool(" + std::to_string(threads) + ") did not rethrow the failure at worker " +
                            std::to_string(fail_at));
    if (attempts != fail_at) return fail("workers were still being created after the failure");
    std::cout << "worker " << fail_at << " failed: constructor rethrew, " << fail_at - 1
              << " started workers joined" << std::endl;
  }
  if (!pool_works(threads)) return fail("a pool built after the failures computed a wrong sum");
  std::cout << "all passed" << std::endl;
  return 0;
}
