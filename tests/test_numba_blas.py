"""numba_blas.py: a BLAS gemm (NumPy's, or MKL's where installed) called from a Numba parallel
region, against plain loops, and the products numba_backend spreads over the cores with it
against its Python-thread fallback; which library config.NUMBA_GEMM picks; the threading layer."""
import naive
import numpy as np
import pytest

from fastmnist import config
from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

if backend_status("numba")[0]:
    from fastmnist.backends import numba_backend as NB
    from fastmnist.backends import numba_blas as B

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def numpy_ships_openblas() -> bool:
    from threadpoolctl import threadpool_info
    return any(i.get("internal_api") == "openblas" and "numpy" in i.get("filepath", "") for i in threadpool_info())


@pytest.fixture(scope="module", params=["numpy", "mkl"])
def lib(request):
    """Each library numba_blas can call: NumPy's BLAS, and MKL where the mkl extra is installed."""
    if request.param == "mkl":
        found, why_not = B.mkl_library()
        if found is None:
            pytest.skip(f"no MKL for numba_blas here: {why_not}")
        return found
    found = B.numpy_library()
    if found is None:
        if numpy_ships_openblas():
            pytest.fail("NumPy's bundled OpenBLAS is loaded, but numba_blas found no gemm in it")
        pytest.skip("this NumPy's BLAS exports no gemm numba_blas knows: numba_backend uses its thread pool")
    return found


def oracle(a, b):
    return naive.affine_forward(a, b, np.zeros(b.shape[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_against_loops(lib, dtype):
    """Three products at once on two threads: plain; a transposed a and b; a column slice of a
    (lda > K) into the middle columns of a wider output (ldc > N)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((33, 17)).astype(dtype), rng.standard_normal((17, 9)).astype(dtype)
    at, bt = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T  # columns contiguous
    wide_a = rng.standard_normal((33, 40)).astype(dtype)
    wide_out = np.full((17, 30), np.nan, dtype)
    outs = [np.full((33, 9), np.nan, dtype), np.full((33, 9), np.nan, dtype)]
    assert B.run_products(lib, [(a, b, outs[0]), (at, bt, outs[1]), (wide_a[:17, 5:22], b, wide_out[:, 3:12])])
    np.testing.assert_allclose(outs[0], oracle(a, b), **TOL[dtype])
    np.testing.assert_allclose(outs[1], oracle(a, b), **TOL[dtype])
    np.testing.assert_allclose(wide_out[:, 3:12], oracle(wide_a[:17, 5:22], b), **TOL[dtype])
    assert np.isnan(wide_out[:, :3]).all() and np.isnan(wide_out[:, 12:]).all()  # nothing outside written


def test_refuses_what_is_not_a_blas_product(lib):
    """Strided both ways, mixed or integer dtypes, mismatched or empty shapes, a reversed, read-only
    or overlapping output: False, nothing written."""
    f32 = np.ones((8, 8), np.float32)
    out = np.full((8, 8), np.nan, np.float32)
    frozen = np.full((8, 8), np.nan, np.float32)
    frozen.flags.writeable = False
    shared = np.ones((8, 16), np.float32)
    for a, b, o in [(f32[::2, ::2], f32[:4, :4], out[:4, :4]),
                    (f32, f32.astype(np.float64), out),
                    (f32.astype(np.int32), f32.astype(np.int32), np.zeros((8, 8), np.int32)),
                    (f32, f32[:7], out),
                    (f32[:, :0], f32[:0], out),
                    (f32, f32, out[:, ::-1]),
                    (f32, f32, frozen),
                    (shared[:, :8], f32, shared[:, 8:])]:
        assert not B.run_products(lib, [(a, b, o)])
    assert np.isnan(out).all() and np.isnan(frozen).all() and (shared == 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [300, 40], ids=["rows cut", "reduction cut"])
def test_split_products_match_the_thread_pool(monkeypatch, dtype, rows):
    """Inside training_context, _matmul's pieces and affine_backward's two products give the
    thread pool's results to the bit (the same BLAS calls), and the loops' within rounding."""
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: training_context splits no product")
    monkeypatch.setattr(config, "SPLIT_GEMM_MIN_FLOPS", 1000)
    monkeypatch.setattr(config, "NUMBA_DENSE_TILES", False)
    monkeypatch.setattr(config, "NUMBA_GEMM", "numpy")  # the pool runs NumPy's BLAS: the same library
    if B.gemm_library() is None:  # found (and checked by products of its own) before the count starts
        pytest.skip("this NumPy's BLAS exports no gemm numba_blas knows: nothing runs in regions")
    ran = []
    real = B.run_products
    monkeypatch.setattr(B, "run_products", lambda lib, products: ran.append(real(lib, products)) or ran[-1])
    rng = np.random.default_rng(rows)
    x, w = rng.standard_normal((rows, 70)).astype(dtype), rng.standard_normal((70, 30)).astype(dtype)
    dy = rng.standard_normal((rows, 30)).astype(dtype)
    results = {}
    for in_regions in (True, False):
        monkeypatch.setattr(config, "NUMBA_BLAS_IN_REGIONS", in_regions)
        with NB.training_context():
            results[in_regions] = (NB._matmul(x, w),) + NB.affine_backward(dy, x, w)
    assert ran == [True, True]  # _matmul's pieces, then affine_backward's pair, in regions (not with the flag off)
    for got, want in zip(results[True], results[False]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(results[True][0], oracle(x, w), **TOL[dtype])
    for got, want in zip(results[True][1:], naive.affine_backward(dy, x, w)):
        np.testing.assert_allclose(got, want, **TOL[dtype])


def mkl_or_skip():
    lib, why_not = B.mkl_library()
    if lib is None:
        pytest.skip(f"no MKL for numba_blas here: {why_not}")
    return lib


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_products_inside_training(monkeypatch, dtype):
    """With config.NUMBA_GEMM 'mkl', _matmul's pieces and affine_backward's pair run on MKL's
    sequential gemm, within rounding of the loops."""
    import numba
    lib = mkl_or_skip()
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: training_context splits no product")
    monkeypatch.setattr(config, "SPLIT_GEMM_MIN_FLOPS", 1000)
    monkeypatch.setattr(config, "NUMBA_DENSE_TILES", False)
    monkeypatch.setattr(config, "NUMBA_GEMM", "mkl")
    B.gemm_library()
    used = []
    real = B.run_products
    monkeypatch.setattr(B, "run_products", lambda lib, products: used.append((lib, real(lib, products))) or used[-1][1])
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((300, 70)).astype(dtype), rng.standard_normal((70, 30)).astype(dtype)
    dy = rng.standard_normal((300, 30)).astype(dtype)
    with NB.training_context():
        y = NB._matmul(x, w)
        grads = NB.affine_backward(dy, x, w)
    assert used == [(lib, True), (lib, True)] and lib.name.startswith("MKL ") and lib.name.endswith(", sequential")
    np.testing.assert_allclose(y, oracle(x, w), **TOL[dtype])
    for got, want in zip(grads, naive.affine_backward(dy, x, w)):
        np.testing.assert_allclose(got, want, **TOL[dtype])
    assert NB.info()["gemm"] == lib.name


def test_the_gemm_choice(monkeypatch):
    """'numpy' is NumPy's BLAS; 'auto' is MKL on an Intel CPU where it can be had, NumPy's BLAS
    elsewhere (MKL not even looked for); 'mkl' without MKL is an error that says how to get it,
    raised when training starts, never a silent substitution; a choice is read in any case."""
    numpy_lib = B.numpy_library()
    mkl_lib = B.GemmLibrary("(a stand-in)", {}, np.int32, "MKL stand-in")
    asked = []
    offer = {"mkl": (mkl_lib, "")}
    monkeypatch.setattr(B, "mkl_library", lambda: asked.append(1) or offer["mkl"])
    B._gemm_library.cache_clear()
    try:
        for choice, intel, want, looked in (("numpy", True, numpy_lib, 0), ("auto", False, numpy_lib, 0),
                                            ("auto", True, mkl_lib, 1), (" MKL", False, mkl_lib, 1)):
            B._gemm_library.cache_clear()
            asked.clear()
            monkeypatch.setattr(B, "_intel_cpu", lambda intel=intel: intel)
            monkeypatch.setattr(config, "NUMBA_GEMM", choice)
            assert B.gemm_library() is want and len(asked) == looked, (choice, intel)
        offer["mkl"] = (None, "MKL is not installed (pip install 'fastmnist[mkl]' on Linux x86-64)")
        B._gemm_library.cache_clear()
        monkeypatch.setattr(config, "NUMBA_GEMM", "auto")
        monkeypatch.setattr(B, "_intel_cpu", lambda: True)
        assert B.gemm_library() is numpy_lib  # auto: NumPy's where MKL cannot be had
        monkeypatch.setattr(config, "NUMBA_GEMM", "mkl")
        message = r"FASTMNIST_NUMBA_GEMM\) is 'mkl', but MKL is not installed \(pip install 'fastmnist\[mkl\]'"
        with pytest.raises(fastmnist_errors().InvalidArgument, match=message):
            B.gemm_library()
        with pytest.raises(fastmnist_errors().InvalidArgument, match=message):
            with NB.training_context():
                pytest.fail("training started without the library it was told to use")
        assert NB.info()["gemm"].startswith("error: config.NUMBA_GEMM")
        for bad in ("openblas", None):
            monkeypatch.setattr(config, "NUMBA_GEMM", bad)
            with pytest.raises(fastmnist_errors().InvalidArgument, match="must be one of auto, numpy, mkl"):
                B.gemm_library()
    finally:
        B._gemm_library.cache_clear()


def test_mkl_gives_the_same_bits_whatever_the_alignment():
    """A repeated run must end with the same weights, bit for bit, and NumPy's allocator places
    arrays anywhere on 16-byte boundaries: MKL (strict reproducibility) gives the same product from
    operands and outputs at every offset."""
    lib = mkl_or_skip()
    rng = np.random.default_rng(5)

    def placed(a, offset):
        raw = np.empty(a.nbytes + 128, np.uint8)
        start = -raw.ctypes.data % 64 + offset
        view = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        return view

    for m, k, n in ((256, 800, 256), (100, 433, 100), (37, 19, 23)):
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        results = []
        for offset_a, offset_b, offset_out in ((0, 0, 0), (4, 16, 32), (16, 4, 8), (32, 48, 4), (60, 12, 20)):
            out = placed(np.zeros((m, n), np.float32), offset_out)
            assert B.run_products(lib, [(placed(a, offset_a), placed(b, offset_b), out)])
            results.append(out.copy())
        for other in results[1:]:
            np.testing.assert_array_equal(other, results[0])


def fastmnist_errors():
    import fastmnist.errors
    return fastmnist.errors


def test_openmp_before_tbb_unless_the_user_chose():
    """The mkl extra installs tbb, which Numba would otherwise prefer to OpenMP: the backend asks
    for OpenMP first (config.NUMBA_THREADING_LAYER_PRIORITY), whether Numba was imported before it
    or not, and leaves the user's choice alone: an environment variable, or numba.config set in code."""
    import os
    import subprocess
    import sys
    try:
        import numba.np.ufunc.omppool  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"Numba's OpenMP layer does not load here: {exc}")
    run = ("import fastmnist.backends.numba_backend as NB\n"
           "import numba\n"
           "NB.K.warm_threads(); print(numba.threading_layer(), list(numba.config.THREADING_LAYER_PRIORITY))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    ours = "omp ['omp', 'tbb', 'workqueue']"
    for code, extra, want in ((run, {}, ours),
                              ("import numba\n" + run, {}, ours),
                              ("import numba\nnumba.config.THREADING_LAYER = 'workqueue'\n" + run, {},
                               "workqueue ['tbb', 'omp', 'workqueue']"),
                              (run, {"NUMBA_THREADING_LAYER": "workqueue"}, "workqueue ['tbb', 'omp', 'workqueue']"),
                              (run, {"NUMBA_THREADING_LAYER_PRIORITY": "workqueue omp tbb"},
                               "workqueue ['workqueue', 'omp', 'tbb']")):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(env, **extra),
                              timeout=300)
        assert proc.stdout.strip() == want, (code, extra, proc.stderr[-2000:])
