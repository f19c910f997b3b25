// The whole C++ API of convgemm in one include.
#pragma once

#include <convgemm/activation.hpp>
#include <convgemm/conv2d.hpp>
#include <convgemm/conv_transpose2d.hpp>
#include <convgemm/dense.hpp>
#include <convgemm/direct_conv2d.hpp>
#include <convgemm/error.hpp>
#include <convgemm/export.hpp>
#include <convgemm/loss.hpp>
#include <convgemm/pool2d.hpp>
#include <convgemm/runtime.hpp>
#include <convgemm/tensor.hpp>
#include <convgemm/tiled_conv2d.hpp>
