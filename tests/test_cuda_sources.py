"""The CUDA sources of the cupy backend compile with nvcc, GPU or not, so a syntax error cannot
land unseen; and the cupy backend module imports and reports itself unavailable without a GPU."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastmnist
from fastmnist.backends import backend_status, contract
from fastmnist.backends import numpy_backend as reference

KERNELS = Path(fastmnist.__file__).parent / "backends" / "cuda" / "kernels.cu"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_61", "sm_75", "sm_90"])
def test_kernels_compile_with_nvcc_for_every_supported_gpu(tmp_path, arch):
    """Compute capability 6.1 (GTX 10xx) is the oldest target the source allows (atomicAdd on double
    needs 6.0); it needs CUDA 12, as CUDA 13 dropped GPUs older than 7.5 (checked where nvcc has it).
    Nothing Hopper-only (wgmma, bulk tensor copies, clusters) may appear on the default path."""
    listed = subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    if f"compute_{arch[3:]}" not in listed:
        pytest.skip(f"this nvcc does not target {arch} (CUDA 13 dropped GPUs older than compute capability 7.5; "
                    f"CUDA 12 targets 5.0 and up); it lists {' '.join(listed)}")
    out = tmp_path / "kernels.ptx"
    proc = subprocess.run(["nvcc", "--std=c++14", f"-arch={arch}", "-DFASTMNIST_THREADS=256", "--ptx", str(KERNELS),
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ptx = out.read_text()
    for entry in ("im2col_f32", "col2im_f64", "rows_pool_f32", "softmax_ce_f32", "adam_many_f32", "dropout_f64"):
        assert f".entry {entry}(" in ptx, entry
    for hopper_only in ("wgmma", "cp.async.bulk", "cluster", "setmaxnreg"):
        assert hopper_only not in ptx, hopper_only


def test_cupy_backend_importable_and_explains_itself():
    import fastmnist.backends.cupy_backend as cb  # importable on any machine
    ok, why = backend_status("cupy")
    assert why
    if not ok:
        assert ("not installed" in why) or ("no usable CUDA GPU" in why) or ("cannot compile kernels" in why)
        with pytest.raises(fastmnist.BackendUnavailable, match="pip install 'fastmnist\\[cuda13\\]'"):
            fastmnist.get_backend("cupy")
    assert callable(cb.backend.conv2d_forward) and callable(cb.backend.adam_update_many)
    assert contract.backend_problems(cb.backend, reference) == []  # checked without cupy: nothing here imports it


def test_importing_the_cupy_backend_never_imports_cupy():
    code = "import sys, fastmnist.backends.cupy_backend, fastmnist.backends.cupy_sim_backend; print('cupy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr
