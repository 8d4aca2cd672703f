// at::parallel_for over a list of tasks, run inline when the whole job is small: waking the OpenMP team costs more
// than tiny inputs take (and much more on a loaded machine).
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace boxseg {

constexpr int64_t kMinParallelWork = 32768;  // pixels (or pixel x candidate products) below which we stay serial

template <typename F>
void parallel_tasks(int64_t num_tasks, int64_t total_work, const F& f) {
  if (num_tasks <= 0) return;
  if (total_work < kMinParallelWork) {
    f(int64_t{0}, num_tasks);
    return;
  }
  at::parallel_for(0, num_tasks, 1, f);
}

}  // namespace boxseg
