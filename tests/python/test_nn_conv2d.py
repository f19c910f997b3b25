"""convgemm.nn.Conv2d against torch: outputs and all gradients on 300 seeded random problems, gradcheck, the fused
conv2d_relu, the drop-in contract (constructor, initial weights, state_dict), only-requested gradients, zero-copy,
errors.
Run by ctest with PYTHONPATH=lib/python and CONVGEMM_LIBRARY=the built libconvgemm.so.0."""

import copy
import math
import os
import random
import threading
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

import convgemm
import convgemm.nn as cnn
from convgemm import _capi

torch.set_num_threads(2)


def gamma(terms):
    """Higham's gamma_n = n*u / (1 - n*u), u = 2^-24: however a float32 sum of n products is ordered (GEMM
    blocking, FMA, col2im, the chunked dW reduction), |computed - exact| <= gamma_n * sum |products|."""
    u = 2.0 ** -24
    return terms * u / (1 - terms * u)


def random_problem(rng):
    """One random convolution: groups (depthwise too), stride, dilation, padding as int / pair / 'valid' /
    'same' (asymmetric whenever dilation*(kernel-1) is odd), bias or not, 1x1 kernels included."""
    groups = rng.choice([1, 1, 1, 2, 3, 4])
    depthwise = rng.random() < 0.15
    in_channels = groups * (1 if depthwise else rng.randint(1, 3))
    out_channels = groups * rng.randint(1, 3)
    kernel = (1, 1) if rng.random() < 0.1 else (rng.randint(1, 5), rng.randint(1, 5))
    dilation = (rng.randint(1, 3), rng.randint(1, 3)) if rng.random() < 0.4 else (1, 1)
    padding = rng.choice(["int", "pair", "valid", "same"])
    stride = (1, 1) if padding == "same" or rng.random() < 0.3 else (rng.randint(1, 3), rng.randint(1, 3))
    if padding == "int":
        padding = rng.randint(0, 2)
        pads = (padding, padding)
    elif padding == "pair":
        padding = (rng.randint(0, 3), rng.randint(0, 3))
        pads = padding
    else:
        pads = (0, 0)  # 'same' pads at least what the kernel needs, so any size fits
    size = []
    for axis in range(2):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = 1 if padding == "same" else max(1, extent - 2 * pads[axis])
        size.append(rng.randint(smallest, smallest + 9))
    return dict(batch=rng.randint(1, 3), in_channels=in_channels, out_channels=out_channels, size=tuple(size),
                kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=rng.random() < 0.6)


def explicit_padding(problem):
    """(left, right, top, bottom) for F.pad, so the float64 reference needs no padding mode of its own."""
    padding, kernel, dilation = problem["padding"], problem["kernel_size"], problem["dilation"]
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":  # torch's and convgemm's definition: total d*(k-1), the odd pixel right/bottom
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
    height, width = (padding, padding) if isinstance(padding, int) else padding
    return (width, width, height, height)


def float64_conv(problem, x, w, b, dy, absolute):
    """The exact result (float64 on float32 data: every product and partial sum is exact or within 1e-16) of
    the forward and of the gradients of <y, dy>; with absolute=True, the same on |x|, |w|, |b|, |dy|, which is
    the sum of |products| the error bound scales with."""
    def prepare(t):
        if t is None:
            return None
        t = t.detach().double()
        return (t.abs() if absolute else t).requires_grad_()
    x64, w64, b64 = prepare(x), prepare(w), prepare(b)
    y = F.conv2d(F.pad(x64, explicit_padding(problem)), w64, b64, problem["stride"], 0, problem["dilation"],
                 problem["groups"])
    dy64 = dy.double().abs() if absolute else dy.double()
    grads = torch.autograd.grad(y, [t for t in (x64, w64, b64) if t is not None], dy64)
    return (y.detach(),) + tuple(grads)


class RandomProblems(unittest.TestCase):
    def test_outputs_and_gradients_match_torch_on_300_problems(self):
        rng = random.Random(20240601)
        torch.manual_seed(20240601)
        worst_exact = worst_torch = worst_abs = 0.0
        kinds = {"same_asymmetric": 0, "strided": 0, "dilated": 0, "grouped": 0, "depthwise": 0, "bias": 0,
                 "one_by_one": 0}
        for index in range(300):
            p = random_problem(rng)
            module = cnn.Conv2d(p["in_channels"], p["out_channels"], p["kernel_size"], p["stride"], p["padding"],
                                p["dilation"], p["groups"], p["bias"])
            stock = torch.nn.Conv2d(p["in_channels"], p["out_channels"], p["kernel_size"], p["stride"],
                                    p["padding"], p["dilation"], p["groups"], p["bias"])
            stock.load_state_dict(module.state_dict())
            x = (torch.rand(p["batch"], p["in_channels"], *p["size"]) * 2 - 1).requires_grad_()
            y = module(x)
            dy = torch.rand_like(y) * 2 - 1
            params = [x, module.weight] + ([module.bias] if p["bias"] else [])
            ours = (y.detach(),) + torch.autograd.grad(y, params, dy)
            x_stock = x.detach().clone().requires_grad_()
            y_stock = stock(x_stock)
            stock_params = [x_stock, stock.weight] + ([stock.bias] if p["bias"] else [])
            theirs = (y_stock.detach(),) + torch.autograd.grad(y_stock, stock_params, dy)
            exact = float64_conv(p, x, module.weight, module.bias, dy, absolute=False)
            magnitude = float64_conv(p, x, module.weight, module.bias, dy, absolute=True)

            taps = p["kernel_size"][0] * p["kernel_size"][1]
            pixels = p["batch"] * y.shape[2] * y.shape[3]
            terms = [p["in_channels"] // p["groups"] * taps + int(p["bias"]),  # y
                     p["out_channels"] // p["groups"] * taps,  # dx: at most every (k, r, s) reads a pixel
                     pixels, pixels]  # dW, db
            for name, mine, stock_value, exact_value, mag, n in zip(("y", "dx", "dW", "db"), ours, theirs, exact,
                                                                    magnitude, terms):
                bound = gamma(n) * mag
                error = (mine.double() - exact_value).abs()
                # Both ours and torch's float32 results are within the bound of the exact one.
                versus_torch = (mine.double() - stock_value.double()).abs()
                where = f"problem {index} {p}: {name}"
                self.assertTrue(bool((error <= bound).all()), f"{where}: off the exact result by "
                                f"{(error - bound).max().item():.3g} beyond gamma({n}) * sum|products|")
                self.assertTrue(bool((versus_torch <= 2 * bound).all()), f"{where}: off torch's float32 by "
                                f"{(versus_torch - 2 * bound).max().item():.3g} beyond the two bounds")
                nonzero = bound > 0
                if bool(nonzero.any()):
                    worst_exact = max(worst_exact, (error[nonzero] / bound[nonzero]).max().item())
                    worst_torch = max(worst_torch, (versus_torch[nonzero] / bound[nonzero]).max().item())
                worst_abs = max(worst_abs, versus_torch.max().item())

            total_padding = [d * (k - 1) for d, k in zip(p["dilation"], p["kernel_size"])]
            kinds["same_asymmetric"] += p["padding"] == "same" and any(t % 2 for t in total_padding)
            kinds["strided"] += p["stride"] != (1, 1)
            kinds["dilated"] += p["dilation"] != (1, 1)
            kinds["grouped"] += p["groups"] > 1
            kinds["depthwise"] += p["groups"] == p["in_channels"] and p["groups"] > 1
            kinds["bias"] += p["bias"]
            kinds["one_by_one"] += p["kernel_size"] == (1, 1)
        print(f"\n300 problems {kinds}: max error / bound = {worst_exact:.3f} against the float64 result, "
              f"{worst_torch:.3f} against torch float32 (max |ours - torch| = {worst_abs:.3g})")
        for kind, count in kinds.items():
            self.assertGreaterEqual(count, 10, f"too few random problems of kind {kind}")


class Gradcheck(unittest.TestCase):
    # convgemm computes in float32 only (float64 tensors are refused), so gradcheck runs on float32 inputs with
    # these tolerances. The convolution is linear in each of x, W, b, and gradcheck perturbs one element of one
    # of them at a time, so the central difference (f(v+eps) - f(v-eps)) / 2eps has no truncation error at any
    # eps: only the float32 rounding of f, at most gamma(n) * sum|products| <= gamma(19) * 19 * (1 + eps)
    # ~ 2.4e-5 per output for these sizes (values in [-1, 1], n <= 18 products + bias), divided by eps = 0.1:
    # <= 2.6e-4 in the numerical Jacobian, well inside atol = 1e-3.
    EPS, ATOL, RTOL = 0.1, 1e-3, 1e-3

    def check(self, batch, in_channels, out_channels, size, bias=True, **options):
        torch.manual_seed(7)
        module = cnn.Conv2d(in_channels, out_channels, bias=bias, **options)
        x = torch.rand(batch, in_channels, *size) * 2 - 1
        w = torch.rand_like(module.weight) * 2 - 1
        inputs = [x.requires_grad_(), w.requires_grad_()]
        if bias:
            inputs.append((torch.rand(out_channels) * 2 - 1).requires_grad_())
        function = (lambda x, w, b=None: module._conv_forward(x, w, b))
        self.assertTrue(torch.autograd.gradcheck(function, inputs, eps=self.EPS, atol=self.ATOL, rtol=self.RTOL))

    def test_gradcheck(self):
        import warnings
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not a double precision.*")  # float32 on purpose, above
            self.check(2, 4, 4, (6, 5), kernel_size=3, padding="same", groups=2)
            self.check(1, 3, 2, (7, 7), bias=False, kernel_size=(2, 3), stride=2, padding=(1, 0), dilation=(1, 2))
            self.check(2, 2, 3, (5, 6), kernel_size=(2, 2), padding="same", dilation=(2, 1))  # asymmetric
            self.check(1, 3, 3, (6, 6), kernel_size=3, stride=(2, 1), padding=1, groups=3)  # depthwise
            self.check(2, 3, 2, (4, 5), kernel_size=1)  # the GEMM-only 1x1 path
            self.check(1, 2, 2, (4, 4), kernel_size=3)  # 'valid' by default


class FusedRelu(unittest.TestCase):
    def test_conv2d_relu_equals_relu_of_conv2d_and_torch(self):
        """The fused forward is bitwise relu(conv2d) of the library (the C++ tests show the epilogue changes no
        rounding), its gradients are bitwise those of the unfused pair, and the output matches torch's own
        relu(F.conv2d) within float32 rounding."""
        rng = random.Random(31)
        torch.manual_seed(31)
        zeros = 0
        for index in range(60):
            p = random_problem(rng)
            module = cnn.Conv2d(p["in_channels"], p["out_channels"], p["kernel_size"], p["stride"], p["padding"],
                                p["dilation"], p["groups"], p["bias"])
            w, b = module.weight, module.bias
            args = (p["stride"], p["padding"], p["dilation"], p["groups"])
            x = (torch.rand(p["batch"], p["in_channels"], *p["size"]) * 2 - 1).requires_grad_()
            params = [x, w] + ([b] if p["bias"] else [])
            fused = cnn.conv2d_relu(x, w, b, *args)
            unfused = torch.relu(cnn.conv2d(x, w, b, *args))
            dy = torch.rand_like(fused) * 2 - 1
            where = f"problem {index} {p}"
            self.assertTrue(torch.equal(fused, unfused), f"{where}: forward")
            for name, mine, theirs in zip(("dx", "dW", "db"), torch.autograd.grad(fused, params, dy),
                                          torch.autograd.grad(unfused, params, dy)):
                self.assertTrue(torch.equal(mine, theirs), f"{where}: {name}")
            stock = torch.relu(F.conv2d(F.pad(x, explicit_padding(p)), w, b, p["stride"], 0, p["dilation"],
                                        p["groups"]))
            torch.testing.assert_close(fused, stock, atol=1e-5, rtol=1e-5, msg=f"{where}: against torch")
            zeros += int((fused == 0).sum())
        self.assertGreater(zeros, 1000, "the ReLU had nothing to clamp")

    def test_unbatched_input(self):
        w, b = torch.randn(3, 2, 3, 3), torch.randn(3)
        x = torch.randn(2, 6, 5)
        torch.testing.assert_close(cnn.conv2d_relu(x, w, b, padding=1),
                                   torch.relu(F.conv2d(x.unsqueeze(0), w, b, padding=1))[0], atol=1e-5, rtol=1e-5)


class DropIn(unittest.TestCase):
    def test_same_initial_weights_and_state_dict_as_torch(self):
        for args, kwargs in [((3, 8, 3), {}), ((4, 6, (2, 5)), dict(stride=2, padding=1, groups=2, bias=False)),
                             ((6, 6, 3), dict(padding="same", dilation=2, groups=6))]:
            torch.manual_seed(3)
            ours = cnn.Conv2d(*args, **kwargs)
            torch.manual_seed(3)
            stock = torch.nn.Conv2d(*args, **kwargs)
            self.assertIsInstance(ours, torch.nn.Conv2d)
            self.assertEqual(ours.state_dict().keys(), stock.state_dict().keys())
            for key, value in stock.state_dict().items():
                self.assertTrue(torch.equal(ours.state_dict()[key], value), key)
            self.assertEqual(repr(ours), repr(stock))

    def test_unbatched_input_and_storage_offset(self):
        module = cnn.Conv2d(2, 3, 3, padding=1)
        storage = torch.randn(3, 2, 5, 5)
        x = storage[1]  # contiguous, but starting one sample into the storage
        expected = F.conv2d(x.unsqueeze(0), module.weight, module.bias, padding=1)[0]
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)

    def test_deepcopy_and_concurrent_calls(self):
        module = cnn.Conv2d(3, 4, 3, padding=1)
        twin = copy.deepcopy(module)
        inputs = [torch.randn(2, 3, 9, 9) for _ in range(4)]
        expected = [twin(x) for x in inputs]
        results = [None] * len(inputs)

        def run(i):
            for _ in range(20):
                results[i] = module(inputs[i])
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result, value in zip(results, expected):
            self.assertTrue(torch.equal(result, value))


class RuntimeInfo(unittest.TestCase):
    def test_says_what_the_library_runs_on(self):
        info = convgemm.runtime_info()
        self.assertEqual(info["version"], ".".join(map(str, convgemm.library_version())))
        self.assertEqual(info["blas_vendor"], "OpenBLAS")
        self.assertIn("OpenBLAS", info["blas_config"])
        self.assertTrue(info["blas_kernel"] and info["tbb_version"])
        self.assertGreaterEqual(info["default_threads"], 1)
        # The library's own kernels need AVX-512 F (implied by the F/CD/BW/DQ/VL that cpu_has_avx512 reports) and
        # step aside for CONVGEMM_KERNELS=portable.
        self.assertIn(info["conv_gemm_kernel"], ("convgemm AVX-512", "OpenBLAS"))
        if info["cpu_has_avx512"] and os.environ.get("CONVGEMM_KERNELS") != "portable":
            self.assertEqual(info["conv_gemm_kernel"], "convgemm AVX-512")


class Calls(unittest.TestCase):
    def counting(self):
        counts = {}
        patches = []
        for name in ("forward", "backward_data", "backward_weights", "backward_bias"):
            original = getattr(_capi.Conv2dPlan, name)

            def counted(self_, *args, _name=name, _original=original):
                counts[_name] = counts.get(_name, 0) + 1
                return _original(self_, *args)
            patches.append(mock.patch.object(_capi.Conv2dPlan, name, counted))
        return counts, patches

    def test_backward_computes_only_requested_gradients(self):
        cases = [((True, False, False), {"backward_data"}),
                 ((False, True, False), {"backward_weights"}),
                 ((False, False, True), {"backward_bias"}),
                 ((True, True, True), {"backward_data", "backward_weights", "backward_bias"})]
        for (input_grad, weight_grad, bias_grad), expected in cases:
            module = cnn.Conv2d(2, 4, 3)
            module.weight.requires_grad_(weight_grad)
            module.bias.requires_grad_(bias_grad)
            x = torch.randn(2, 2, 6, 6, requires_grad=input_grad)
            counts, patches = self.counting()
            for patch in patches:
                patch.start()
            try:
                module(x).sum().backward()  # the gradient of sum() is a stride-0 broadcast: made contiguous
            finally:
                for patch in patches:
                    patch.stop()
            self.assertEqual(set(counts) - {"forward"}, expected)
            self.assertEqual(x.grad is not None, input_grad)
            self.assertEqual(module.weight.grad is not None, weight_grad)
            self.assertEqual(module.bias.grad is not None, bias_grad)

    def test_zero_copy(self):
        module = cnn.Conv2d(2, 4, 3)
        x = torch.randn(2, 2, 6, 6)
        pointers = []
        original = _capi.tensor
        with mock.patch.object(_capi, "tensor", lambda ptr, shape: (pointers.append(ptr), original(ptr, shape))[1]):
            y = module(x)
        self.assertEqual(pointers, [x.data_ptr(), module.weight.data_ptr(), y.data_ptr()])

    def test_plans_are_cached_per_shape(self):
        cnn._plan.cache_clear()
        module = cnn.Conv2d(2, 4, 3)
        for batch in (2, 2, 3, 2):
            module(torch.randn(batch, 2, 6, 6))
        info = cnn._plan.cache_info()
        self.assertEqual((info.misses, info.hits), (2, 2))


class Errors(unittest.TestCase):
    def test_refuses_what_it_cannot_take_without_a_copy(self):
        module = cnn.Conv2d(2, 4, 3)
        x = torch.randn(1, 2, 6, 6)
        with self.assertRaisesRegex(TypeError, "float32"):
            module(x.double())
        with self.assertRaisesRegex(TypeError, "device meta"):
            module(torch.empty(1, 2, 6, 6, device="meta"))
        with self.assertRaisesRegex(ValueError, "not contiguous"):
            module(torch.randn(1, 2, 6, 12)[..., ::2])
        with self.assertRaisesRegex(ValueError, "not contiguous"):
            module(torch.randn(2, 2, 6, 6).to(memory_format=torch.channels_last))
        with self.assertRaisesRegex(TypeError, "layout"):
            module(x.to_sparse())
        with self.assertRaisesRegex(TypeError, "float32"):
            module.double()(x.double())

    def test_constructor_and_shape_errors(self):
        with self.assertRaisesRegex(ValueError, "padding_mode"):
            cnn.Conv2d(2, 4, 3, padding_mode="reflect")
        with self.assertRaisesRegex(TypeError, "dtype"):
            cnn.Conv2d(2, 4, 3, dtype=torch.float64)
        with self.assertRaisesRegex(TypeError, "device"):
            cnn.Conv2d(2, 4, 3, device="meta")
        with self.assertRaisesRegex(ValueError, "strided"):
            cnn.Conv2d(2, 4, 3, stride=2, padding="same")
        with self.assertRaisesRegex(ValueError, r"weights: shape \[4, 2, 3, 3\] .* expected \[4, 3, 3, 3\]"):
            cnn.Conv2d(2, 4, 3)(torch.randn(1, 3, 6, 6))  # the library's own message: 3 input channels
        with self.assertRaisesRegex(ValueError, "kernel_height"):
            cnn.Conv2d(2, 4, 5)(torch.randn(1, 2, 3, 8))

    def test_library_identifies_itself(self):
        self.assertEqual(convgemm.library_version()[:2], _capi.ABI_VERSION)
        self.assertTrue(math.isfinite(cnn.conv2d(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).item()))


if __name__ == "__main__":
    unittest.main(verbosity=2)
