// A fixed pool of worker threads running parallel_for jobs.
//
// Many Python threads may share one Predictor and so call parallel_for at the same time. The caller always
// works on its own job as well, so a job finishes even when every worker is busy with other callers' jobs:
// no caller can deadlock waiting for the pool.
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

class ThreadPool {
 public:
  // `threads` is the total parallelism including the calling thread; <= 0 means one per hardware thread.
  explicit ThreadPool(int threads) {
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    size_ = threads;
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

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

  int size_ = 1;
  std::vector<std::thread> workers_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace boxseg
