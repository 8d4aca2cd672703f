// A fixed pool of worker threads running parallel_for jobs.
//
// Many Python threads may share one Predictor and so call parallel_for at the same time. The caller always
// works on its own job as well, so a job finishes even when every worker is busy with other callers' jobs:
// no caller can deadlock waiting for the pool.
//
// Exception safety: creating a worker can fail (std::system_error when a container's process or memory limit
// is reached). The constructor then stops and joins the workers it already started before rethrowing, and the
// members the workers use (mutex, condition variable, queue) are declared before `workers_`, so they are built
// before any worker starts and destroyed only after every worker has been joined.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace boxseg {

#ifdef BOXSEG_THREAD_POOL_TESTING
// Test programs (runtime/tests/) define BOXSEG_THREAD_POOL_TESTING and set this to make the creation of worker
// `index` (1-based) throw, as thread creation does when a process or memory limit is reached.
namespace thread_pool_testing {
inline std::function<void(int index)> before_worker_start;
}  // namespace thread_pool_testing
#endif

class ThreadPool {
 public:
  // `threads` is the total parallelism including the calling thread; <= 0 means one per hardware thread.
  explicit ThreadPool(int threads) {
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    size_ = threads;
    workers_.reserve(static_cast<size_t>(threads - 1));  // no reallocation while workers run
    try {
      for (int i = 1; i < threads; ++i) {
#ifdef BOXSEG_THREAD_POOL_TESTING
        if (thread_pool_testing::before_worker_start) thread_pool_testing::before_worker_start(i);
#endif
        workers_.emplace_back([this] { worker_loop(); });
      }
    } catch (...) {
      // The destructor does not run for a half-built object, and destroying a joinable std::thread calls
      // std::terminate: stop and join the workers started so far here.
      stop_and_join();
      throw;
    }
  }

  ~ThreadPool() { stop_and_join(); }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Runs fn(0) ... fn(n-1), spread over the pool and the caller; returns when all are done.
  // The first exception thrown by fn is re-thrown here (the remaining indices still run).
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    if (n == 1 || workers_.empty()) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->n = n;
    const int64_t helpers = std::min<int64_t>(n - 1, static_cast<int64_t>(workers_.size()));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (int64_t i = 0; i < helpers; ++i) queue_.push_back(job);
    }
    if (helpers == 1) {
      cv_.notify_one();
    } else {
      cv_.notify_all();
    }
    work_on(*job);
    {
      std::unique_lock<std::mutex> lock(job->mutex);
      job->cv.wait(lock, [&] { return job->done.load() == job->n; });
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  struct Job {
    const std::function<void(int64_t)>* fn = nullptr;
    int64_t n = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mutex;
    std::condition_variable cv;
    std::exception_ptr error;
  };

  static void work_on(Job& job) {
    for (;;) {
      const int64_t i = job.next.fetch_add(1);
      if (i >= job.n) return;
      try {
        (*job.fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(job.mutex);
        if (!job.error) job.error = std::current_exception();
      }
      if (job.done.fetch_add(1) + 1 == job.n) {
        std::lock_guard<std::mutex> lock(job.mutex);
        job.cv.notify_all();
      }
    }
  }

  void stop_and_join() noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

  void worker_loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      work_on(*job);
    }
  }

  // Order matters: members are destroyed in reverse, so everything a worker touches outlives `workers_`.
  int size_ = 1;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;  // last: started only after the members above exist
};

}  // namespace boxseg
