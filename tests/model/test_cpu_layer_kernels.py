"""The fused C++ layer kernels (residual add + RMSNorm, silu(gate) * up) against torch's ops, in float32, bfloat16
and float16."""

import platform
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from pagedllm_core.config import EngineConfig
from pagedllm_core.model.layers import cpu_kernels
from pagedllm_core.model.layers.activation import ActAndMul, SiluAndMul, act_and_mul
from pagedllm_core.model.layers.norm import RMSNorm
from pagedllm_core.testing import SequenceChunk
from tests.model.paged_model import PagedModel

ROW_COUNTS = [0, 1, 7, 300]
HIDDEN_SIZES = [17, 64, 576, 1000, 1008]
# torch's silu takes SLEEF's vectorised expf on x86 (what the kernel reproduces) and other vector code elsewhere.
SILU_BIT_IDENTICAL = platform.machine() in ("x86_64", "AMD64")
HALF_DTYPES = [torch.bfloat16, torch.float16]


@pytest.fixture
def one_thread():
    # torch's elementwise loops split a large tensor between threads at arbitrary values, which moves
    # the rows' scalar tails: the reference is reproducible only on one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_rows(num_rows: int, size: int, seed: int, scale: float = 4.0) -> torch.Tensor:
    return torch.randn(num_rows, size, generator=torch.Generator().manual_seed(seed)) * scale


def test_without_a_compiler_the_layers_keep_torch_and_say_so(monkeypatch, caplog):
    def no_compiler(name, *sources):
        raise RuntimeError("ninja is required to load C++ extensions")

    monkeypatch.setattr(cpu_kernels, "load_cpp_extension", no_compiler)
    with caplog.at_level("INFO", logger=cpu_kernels.__name__):
        assert cpu_kernels.load_kernels.__wrapped__() is None
    assert "keep their torch ops" in caplog.text and "ninja is required" in caplog.text


@pytest.mark.parametrize("num_rows", ROW_COUNTS)
@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
def test_fused_add_rms_norm_is_the_add_then_the_norm_bit_for_bit(kernels, num_rows, hidden_size):
    x, residual = random_rows(num_rows, hidden_size, 1), random_rows(num_rows, hidden_size, 2)
    weight = random_rows(1, hidden_size, 3, scale=1.0)[0]
    expected_residual = residual + x
    updated = residual.clone()
    out = kernels.fused_add_rms_norm(x, updated, weight, 1e-6)
    assert torch.equal(updated, expected_residual)
    assert torch.equal(out, kernels.rms_norm(expected_residual, weight, 1e-6))
    torch.testing.assert_close(out, F.rms_norm(expected_residual, weight.shape, weight, 1e-6), rtol=2e-6, atol=1e-6)


def test_fused_add_rms_norm_refuses_a_residual_it_cannot_update_in_place(kernels):
    residual = torch.randn(4, 64)[:, ::2]
    with pytest.raises(RuntimeError, match="contiguous"):
        kernels.fused_add_rms_norm(torch.randn(4, 32), residual, torch.ones(32), 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES])
@pytest.mark.parametrize("num_rows", ROW_COUNTS)
@pytest.mark.parametrize("size", [1, 8, 33, *HIDDEN_SIZES, 1536])
def test_silu_and_mul_matches_torch(kernels, one_thread, dtype, num_rows, size):
    gate_up = random_rows(num_rows, 2 * size, size).to(dtype)
    out = kernels.silu_and_mul(gate_up, cpu_kernels.silu_vector_block(dtype))
    expected = F.silu(gate_up[:, :size]) * gate_up[:, size:]
    if SILU_BIT_IDENTICAL or dtype != torch.float32:
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, rtol=3e-7, atol=1e-30)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("size", [37, 1000, 1536])  # scalar tails only, vectors and a tail, whole vectors
def test_silu_and_mul_rounds_every_half_precision_value_as_torch(kernels, one_thread, dtype, size):
    # Every finite value of the dtype as a gate, in rows of `size` (strided, as the fused projection gives them).
    gates = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    gates = gates[gates.isfinite()]
    gates = torch.cat((gates, gates[: -gates.numel() % size or None])).reshape(-1, size)
    gate_up = torch.cat((gates, random_rows(*gates.shape, 8).to(dtype)), dim=-1)
    out = kernels.silu_and_mul(gate_up, cpu_kernels.silu_vector_block(dtype))
    expected = F.silu(gate_up[:, :size]) * gate_up[:, size:]
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
def test_half_precision_rms_norm_rounds_as_the_layers_torch_code(kernels, dtype, hidden_size):
    # `weight * rms_norm(x.float()).to(dtype)`: the same roundings; the float32 sum of squares may differ from
    # F.rms_norm's in its last bit, which can move the normalised value by a unit in its last place, and so the
    # product with the weight by about two.
    x, weight = random_rows(300, hidden_size, 1).to(dtype), random_rows(1, hidden_size, 3, scale=1.0)[0].to(dtype)
    expected = weight * F.rms_norm(x.float(), weight.shape, eps=1e-6).to(dtype)
    out = kernels.rms_norm(x, weight, 1e-6)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=2 * torch.finfo(dtype).eps, atol=0)
    assert (out != expected).float().mean() < 0.01
    residual = random_rows(300, hidden_size, 2).to(dtype)
    updated = residual.clone()
    normed = kernels.fused_add_rms_norm(x, updated, weight, 1e-6)
    assert torch.equal(updated, residual + x) and torch.equal(normed, kernels.rms_norm(residual + x, weight, 1e-6))


def test_kernels_refuse_other_dtypes_and_mixed_ones(kernels):
    with pytest.raises(RuntimeError, match="rms_norm.*Double"):
        kernels.rms_norm(torch.ones(2, 4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), 1e-6)
    with pytest.raises(RuntimeError, match="weight is Float, the rows BFloat16"):
        kernels.rms_norm(torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(4), 1e-6)


def test_silu_and_mul_is_exact_over_the_whole_range_of_exp(kernels, one_thread):
    # From where exp(-gate) overflows to where it underflows, in small steps; 3-D and strided input.
    gate = torch.linspace(-110.0, 110.0, 4 * 1000 * 91).reshape(4, 1000, 91)
    gate_up = torch.cat((gate, torch.linspace(-3.0, 3.0, gate.numel()).reshape(gate.shape)), dim=-1)[:, ::2]
    out = kernels.silu_and_mul(gate_up, cpu_kernels.silu_vector_block(torch.float32))
    expected = F.silu(gate_up[..., :91]) * gate_up[..., 91:]
    assert out.shape == (4, 500, 91)
    if SILU_BIT_IDENTICAL:
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, rtol=3e-7, atol=1e-30)


def test_rms_norm_with_residual_gives_the_same_results_on_every_path(kernels):
    norm = RMSNorm(48, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 48))
    x, residual = random_rows(5, 48, 4), random_rows(5, 48, 5)
    with torch.enable_grad():  # autograd: torch's ops, the residual is not touched
        torch_out, torch_residual = norm(x, residual)
    assert torch.equal(torch_residual, residual + x)
    updated = residual.clone()
    with torch.inference_mode():
        out, new_residual = norm(x, updated)
    assert new_residual is updated and torch.equal(updated, residual + x)
    torch.testing.assert_close(out, torch_out.detach(), rtol=2e-6, atol=1e-6)

    bf16_norm = RMSNorm(48, 1e-5).to(torch.bfloat16)
    with torch.inference_mode():
        out, new_residual = bf16_norm(x.bfloat16(), residual.bfloat16())
    expected_residual = residual.bfloat16() + x.bfloat16()
    assert torch.equal(new_residual, expected_residual) and torch.equal(out, bf16_norm(expected_residual))


def test_silu_and_mul_module_takes_the_kernel_outside_autograd_only(kernels, one_thread):
    gate_up = random_rows(3, 2 * 40, 6).requires_grad_()
    module = SiluAndMul()
    module(gate_up).sum().backward()
    assert gate_up.grad is not None
    with torch.inference_mode():
        assert torch.equal(module(gate_up.detach()), ActAndMul(F.silu)(gate_up.detach()))


def test_act_and_mul_is_silu_and_mul_for_silu_only():
    assert type(act_and_mul("silu")) is SiluAndMul and type(act_and_mul("swish")) is SiluAndMul
    gelu = act_and_mul("gelu_pytorch_tanh")
    assert type(gelu) is ActAndMul
    gate_up = random_rows(2, 10, 7)
    assert torch.equal(gelu(gate_up), F.gelu(gate_up[:, :5], approximate="tanh") * gate_up[:, 5:])


def unfused(kernels):
    """The kernels with the fused calls done as separate torch steps: the add, then the norm; silu, then the
    product; the rotation in four kernels."""

    def fused_add_rms_norm(x, residual, weight, eps):
        residual.copy_(residual + x)
        return kernels.rms_norm(residual, weight, eps)

    def silu_and_mul(gate_up, vector_block):
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def rotate_heads(heads, cos, sin):
        rows = heads.unflatten(-1, (-1, cos.shape[-1]))
        return (rows * cos).add_(rows.roll(cos.shape[-1] // 2, dims=-1).mul_(sin)).flatten(1)

    return SimpleNamespace(rms_norm=kernels.rms_norm, fused_add_rms_norm=fused_add_rms_norm, silu_and_mul=silu_and_mul,
                           rotate_heads=rotate_heads)


def greedy_tokens(model: PagedModel, prompt: list[int], num_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    tokens, logits = list(prompt), []
    block_table = list(range(8))
    computed = 0
    for _ in range(num_tokens):
        step_logits = model.step([SequenceChunk(tokens[computed:], computed, block_table)])
        computed = len(tokens)
        logits.append(step_logits[-1])
        tokens.append(int(step_logits[-1].argmax()))
    return tokens[len(prompt):], logits


@pytest.mark.parametrize(
    "architecture, overrides",
    [
        ("LlamaForCausalLM", {}),
        ("Qwen2ForCausalLM", {}),
        ("LlamaForCausalLM", {"hidden_size": 72, "intermediate_size": 100}),
    ],
    ids=["llama", "qwen2", "llama-odd-sizes"],
)
def test_tiny_models_decode_the_same_with_and_without_fusion(
    kernels, one_thread, tiny_model_dir, monkeypatch, architecture, overrides
):
    config = EngineConfig(model=str(tiny_model_dir(architecture, **overrides)), dtype="float32")
    prompt = [5, 17, 99, 300, 12, 7, 8, 44, 45, 100]
    fused_tokens, fused_logits = greedy_tokens(PagedModel(config, block_size=16, num_blocks=8), prompt, 12)

    monkeypatch.setattr(cpu_kernels, "load_kernels", lambda: unfused(kernels))
    tokens, logits = greedy_tokens(PagedModel(config, block_size=16, num_blocks=8), prompt, 12)
    assert tokens == fused_tokens
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(fused_logits, logits))

    monkeypatch.setattr(cpu_kernels, "load_kernels", lambda: None)  # torch's ops alone
    tokens, logits = greedy_tokens(PagedModel(config, block_size=16, num_blocks=8), prompt, 12)
    assert tokens == fused_tokens
    torch.testing.assert_close(torch.stack(logits), torch.stack(fused_logits), rtol=1e-5, atol=1e-5)
