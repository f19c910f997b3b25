// The whole C++ API of convgemm in one include: the operators, and the training layer on top of them (nn/: layers,
// Sequential, optimisers, training loop; io/: IDX data, checkpoints, .npz export).
#pragma once

#include <convgemm/activation.hpp>
#include <convgemm/conv2d.hpp>
#include <convgemm/conv_transpose2d.hpp>
#include <convgemm/dense.hpp>
#include <convgemm/direct_conv2d.hpp>
#include <convgemm/error.hpp>
#include <convgemm/export.hpp>
#include <convgemm/io/checkpoint.hpp>
#include <convgemm/io/idx.hpp>
#include <convgemm/io/npz.hpp>
#include <convgemm/loss.hpp>
#include <convgemm/nn/dataset.hpp>
#include <convgemm/nn/init.hpp>
#include <convgemm/nn/layer.hpp>
#include <convgemm/nn/layers.hpp>
#include <convgemm/nn/optimizer.hpp>
#include <convgemm/nn/schedule.hpp>
#include <convgemm/nn/sequential.hpp>
#include <convgemm/nn/train.hpp>
#include <convgemm/pool2d.hpp>
#include <convgemm/runtime.hpp>
#include <convgemm/tensor.hpp>
#include <convgemm/tiled_conv2d.hpp>
