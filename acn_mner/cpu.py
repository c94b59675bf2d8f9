"""What decides CPU speed on this machine, recorded beside every speed figure of benchmarks/: the vector flags the
kernel reports, the ISA torch dispatches to, and the variables that limit the kernel libraries to AVX2."""

import os
import platform
from pathlib import Path
from typing import Any

import torch

# What limits each kernel library to AVX2 (an AVX2-only CPU measured on a newer one): oneDNN, ATen, FBGEMM.
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "FBGEMM_ENABLE_INSTRUCTIONS")


def cpu_capabilities() -> dict[str, Any]:
    """What decides CPU speed here: the CPU's model name and the vector flags the kernel reports, and the ISA torch
    dispatches to."""
    flags, model = set(), platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "model": model,
        "flags": [flag for flag in wanted if flag in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_kernels": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "isa_limits": {name: os.environ[name] for name in ISA_LIMITS if name in os.environ},
    }


def isa_limit_warning(capabilities: dict[str, Any]) -> str | None:
    """oneDNN and ATen follow their limits, FBGEMM (most int8 kernels) only its own: a partial limit measures int8 on
    the full CPU."""
    limits = capabilities["isa_limits"]
    if limits and len(limits) < len(ISA_LIMITS):
        return f"only {', '.join(limits)} set: set all of {', '.join(ISA_LIMITS)} to measure an AVX2-only CPU"
    return None


__all__ = ["ISA_LIMITS", "cpu_capabilities", "isa_limit_warning"]
