"""Why test_a_gpu_without_row_wise_scales... fails compiled: the layer's product and the test's expected
against a float64 product of the same quantized operands."""
import sys, torch
from torch import nn
sys.path.insert(0, ".")
from tests import test_fp8_rows as t
from tokenmill.quantization import triton_gemms
from tokenmill.quantization.fp8 import Fp8ChannelMethod
from tokenmill.kernels.triton import fp8_quant
torch.set_default_device("cuda")
triton_gemms.scaled_mm_scales = lambda device: "tensor"
products = []
real = torch._scaled_mm
def per_tensor_only(a, b, scale_a, scale_b, out_dtype):
    products.append((scale_a.numel(), scale_b.numel(), out_dtype))
    return real(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)
torch._scaled_mm = per_tensor_only
layer = t.loaded(Fp8ChannelMethod())
start = triton_gemms.DENSE_FROM_TOKENS["fp8-channel"]
x = t.draw(start, 128, seed=31)
values, scales = fp8_quant.quantize_token_groups(x, 128)
expected = (values.float() * scales) @ (layer.weight.float() * layer.weight_scale[:, None]).T
exact = (values.double() * scales.double()) @ (layer.weight.double() * layer.weight_scale.double()[:, None]).T
triton_gemms.use_triton_gemms(nn.Sequential(layer))
got = layer(x)
print("products", products, "gemm", type(layer.method.gemm).__name__)
print("tf32", torch.backends.cuda.matmul.allow_tf32, "precision", torch.get_float32_matmul_precision())
print("layer vs float64", (got.double() - exact).abs().max().item(), "expected vs float64", (expected.double() - exact).abs().max().item(), "max |out|", exact.abs().max().item())
