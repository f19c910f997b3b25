"""convgemm.nn.Conv2d: torch.nn.Conv2d with forward and backward computed by convgemm, and conv2d, its functional
form (torch.nn.functional.conv2d's signature), with conv2d_relu, the same followed by a ReLU fused into it. Tensors
go to the library by data pointer, never copied: they must be contiguous float32 CPU tensors, anything else is
refused with a TypeError (dtype, device, layout) or a ValueError (strides), because a silent conversion would hide a
copy on every call."""

import functools

import torch
from torch.autograd.function import once_differentiable

from convgemm import _capi

__all__ = ["Conv2d", "conv2d", "conv2d_relu"]


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"convgemm: {name} must be an int or a pair of ints, got {value!r}")
    return value


def _require_float32_cpu(name, tensor, dims):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"convgemm: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise TypeError(f"convgemm: {name} has layout {tensor.layout}; only dense (torch.strided) tensors")
    if tensor.device.type != "cpu":
        raise TypeError(f"convgemm: {name} is on device {tensor.device}; convgemm runs on the CPU only")
    if tensor.dtype != torch.float32:
        raise TypeError(f"convgemm: {name} has dtype {tensor.dtype}; convgemm computes in float32 only "
                        "(convert with .float())")
    if tensor.dim() not in dims:
        raise ValueError(f"convgemm: {name} must have {' or '.join(map(str, dims))} dimensions, "
                         f"got shape {tuple(tensor.shape)}")
    if not tensor.is_contiguous():
        raise ValueError(f"convgemm: {name} is not contiguous (shape {tuple(tensor.shape)}, strides "
                         f"{tensor.stride()}); convgemm reads NCHW/KCRS memory in place: pass .contiguous()")


def _padding(padding, kernel, dilation, stride):
    """(top, bottom, left, right) for torch's padding argument: an int, a pair, 'valid' or 'same'."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError("convgemm: padding='same' is not supported for strided convolutions (as in torch)")
        return _capi.same_padding((1, 1), kernel, dilation)  # at stride 1 it depends on kernel and dilation only
    if isinstance(padding, str):
        raise ValueError(f"convgemm: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    height, width = _pair(padding, "padding")
    return (height, height, width, width)


@functools.lru_cache(maxsize=128)
def _plan(input_shape, weight_shape, stride, padding, dilation, groups, has_bias, threads):
    """The plan of one problem (input shape included), made once and reused: plan creation validates and sizes
    the problem, the calls only compute."""
    return _capi.Conv2dPlan(input_shape, weight_shape, stride, padding, dilation, groups, has_bias, threads)


class _Conv2dFunction(torch.autograd.Function):
    """y = conv(x, W) + b through the plan; backward computes exactly the gradients autograd asks for."""

    @staticmethod
    def forward(ctx, input, weight, bias, plan):
        output = torch.empty(plan.output_shape, dtype=torch.float32)
        plan.forward(input.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(),
                     output.data_ptr())
        ctx.plan = plan
        ctx.save_for_backward(input, weight)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, output_grad):
        input, weight = ctx.saved_tensors
        return _gradients(ctx, input, weight, output_grad)


def _gradients(ctx, input, weight, output_grad):
    """The gradients autograd asks for (ctx.needs_input_grad), given dL/d(conv output), through ctx.plan."""
    plan = ctx.plan
    # Autograd may hand over a broadcast or permuted gradient (e.g. the stride-0 one of y.sum()); the library
    # reads dense NCHW, so this is the one place a copy can happen (a no-op when it is contiguous already).
    output_grad = output_grad.contiguous()
    needs_input, needs_weight, needs_bias, _ = ctx.needs_input_grad
    input_grad = weight_grad = bias_grad = None
    if needs_input:  # dx = col2im(W^T dy)
        input_grad = torch.empty_like(input)
        plan.backward_data(output_grad.data_ptr(), weight.data_ptr(), input_grad.data_ptr())
    if needs_weight:  # dW = sum_n dy_n im2col(x_n)^T
        weight_grad = torch.empty_like(weight)
        plan.backward_weights(input.data_ptr(), output_grad.data_ptr(), weight_grad.data_ptr())
    if needs_bias:  # db = sum over n, p, q of dy
        bias_grad = torch.empty(plan.weight_shape[0], dtype=torch.float32)
        plan.backward_bias(output_grad.data_ptr(), bias_grad.data_ptr())
    return input_grad, weight_grad, bias_grad, None


class _Conv2dReluFunction(torch.autograd.Function):
    """y = relu(conv(x, W) + b), the ReLU in the GEMM's epilogue; backward masks dy by y > 0 (torch.relu's
    gradient: 0 where the output is 0) and runs the convolution's backward on that."""

    @staticmethod
    def forward(ctx, input, weight, bias, plan):
        output = torch.empty(plan.output_shape, dtype=torch.float32)
        plan.forward(input.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(),
                     output.data_ptr(), relu=True)
        ctx.plan = plan
        ctx.save_for_backward(input, weight, output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, output_grad):
        input, weight, output = ctx.saved_tensors
        return _gradients(ctx, input, weight, output_grad.masked_fill(output <= 0, 0.0))


def _conv2d_call(function, input, weight, bias, stride, padding, dilation, groups, threads):
    """Checks the arguments, finds the plan and applies `function` (plain or fused ReLU)."""
    _require_float32_cpu("input", input, (3, 4))
    _require_float32_cpu("weight", weight, (4,))
    if bias is not None:
        _require_float32_cpu("bias", bias, (1,))
    if input.dim() == 3:  # unbatched (C, H, W), as torch accepts
        return _conv2d_call(function, input.unsqueeze(0), weight, bias, stride, padding, dilation, groups,
                            threads)[0]
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _padding(padding, tuple(weight.shape[2:]), dilation, stride)
    plan = _plan(tuple(input.shape), tuple(weight.shape), stride, pads, dilation, groups, bias is not None,
                 torch.get_num_threads() if threads is None else threads)
    return function.apply(input, weight, bias, plan)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, threads=None):
    """torch.nn.functional.conv2d computed by convgemm, for contiguous float32 CPU tensors.

    threads: the plan's thread count; None uses torch.get_num_threads(), so torch.set_num_threads() governs
    convgemm too and the two never run more threads than the host asked for.
    """
    return _conv2d_call(_Conv2dFunction, input, weight, bias, stride, padding, dilation, groups, threads)


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, threads=None):
    """torch.relu(conv2d(...)) in one pass: the ReLU is applied in registers before the output is stored (oneDNN's
    post-op), not as a second pass over it. Arguments as conv2d(); differentiable like the unfused pair. One
    difference from torch.relu: a NaN output becomes 0 (convgemm's ReLU keeps only values > 0)."""
    return _conv2d_call(_Conv2dReluFunction, input, weight, bias, stride, padding, dilation, groups, threads)


class Conv2d(torch.nn.Conv2d):
    """A drop-in torch.nn.Conv2d computed by convgemm: the same constructor, parameters, initialisation
    (kaiming_uniform with a = sqrt(5), bias uniform in +-1/sqrt(fan_in)) and state_dict, since it is one.
    Only padding_mode='zeros', float32 and the CPU are supported; threads as in conv2d()."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, threads=None):
        if padding_mode != "zeros":
            raise ValueError(f"convgemm: padding_mode {padding_mode!r} is not supported, only 'zeros'")
        if device is not None and torch.device(device).type != "cpu":
            raise TypeError(f"convgemm: device {device} is not supported; convgemm runs on the CPU only")
        if dtype is not None and dtype != torch.float32:
            raise TypeError(f"convgemm: dtype {dtype} is not supported; convgemm computes in float32 only")
        # float32 explicitly: under torch.set_default_dtype(torch.float64) torch would make float64 parameters.
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device="cpu", dtype=torch.float32)
        self.threads = threads

    def _conv_forward(self, input, weight, bias):
        # torch.nn.Conv2d.forward calls this with the module's own parameters.
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                      threads=self.threads)
