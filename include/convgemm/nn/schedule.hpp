// Learning-rate schedules for Trainer (TrainOptions::learning_rate_schedule): the rate of each step as a function of
// how far training has got, so that a run resumed from a checkpoint gets the same rates as an uninterrupted one.
//
// A schedule is a pure function of the epoch position t = epochs completed + the fraction of the current epoch's
// batches done before the step (0 for the first step of a run, epochs - 1/batches for the last), so it keeps no state
// of its own and a checkpoint needs to save nothing for it.
#pragma once

#include <convgemm/export.hpp>

#include <cstdint>
#include <functional>

namespace convgemm::nn {

using LearningRateSchedule = std::function<double(double epoch_position)>;

// Cosine annealing over `epochs` after an optional linear warm-up:
//   t < warmup:  lr = base * (0.1 + 0.9 * t / warmup)      (a gentle start while the weights are still random)
//   otherwise:   lr = final + (base - final) * (1 + cos(pi * (t - warmup) / (epochs - warmup))) / 2
// Throws convgemm::Error naming the parameter unless base > 0, 0 <= final < base, epochs >= 1 and
// 0 <= warmup_epochs < epochs.
CONVGEMM_CXX_API LearningRateSchedule cosine_schedule(double base_rate, int64_t epochs, double final_rate = 0,
                                                      double warmup_epochs = 0);

// Step decay: lr = base * factor^floor(t / step_epochs). Throws convgemm::Error naming the parameter unless base > 0,
// 0 < factor <= 1 and step_epochs >= 1.
CONVGEMM_CXX_API LearningRateSchedule step_schedule(double base_rate, int64_t step_epochs, double factor);

}  // namespace convgemm::nn
