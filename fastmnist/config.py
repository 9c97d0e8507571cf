"""Tunables in one place, so tests and users can patch them.

Change them at run time (``fastmnist.config.PROGRESS_EVERY = 50``) or, where noted, through an
environment variable read at import. A variable that does not hold a number in its range never
stops the import: the setting it feeds raises :class:`~fastmnist.errors.InvalidArgument` (naming
the variable, its value and what it takes) when read, and :func:`check_environment` raises it at
once (the command line calls it before anything else).
"""
import math
import os

from .errors import InvalidArgument

_BAD_ENVIRONMENT: dict[str, str] = {}  # setting -> why the variable that feeds it was refused


def env_number(name: str, default, *, integer: bool = False, minimum: float = 0, above: bool = False,
               maximum: float | None = None):
    """The number in environment variable ``name``, or ``default`` where it is unset or blank.

    It must be finite (an integer where ``integer``), at least ``minimum`` (above it where
    ``above``) and at most ``maximum`` where given; anything else raises InvalidArgument.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if (value is None or not math.isfinite(value) or value < minimum or (above and value == minimum)
            or (maximum is not None and value > maximum)):
        kind = "an integer" if integer else "a finite number"
        limits = f"{'>' if above else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        raise InvalidArgument(f"environment variable {name}={raw!r}: must be {kind} {limits} (unset: {default})")
    return value


def _from_env(setting: str, name: str, default, **rules):
    """env_number(name, default, **rules) for config.<setting>; a refused value is kept in
    _BAD_ENVIRONMENT, and <setting> removed at the end of this module, until a program reads it."""
    try:
        return env_number(name, default, **rules)
    except InvalidArgument as exc:
        _BAD_ENVIRONMENT[setting] = str(exc)
        return default


def _choice_from_env(setting: str, name: str, default: str, choices: tuple[str, ...]) -> str:
    """Environment variable ``name`` for config.<setting>: one of ``choices`` (case-insensitive),
    ``default`` where unset or blank; another value is refused as _from_env refuses a number."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in choices:
        _BAD_ENVIRONMENT[setting] = (f"environment variable {name}={raw!r}: must be one of {', '.join(choices)} "
                                     f"(unset: {default})")
        return default
    return raw.lower()

#: Default float dtype of data, weights and kernels.
DEFAULT_DTYPE = "float32"

#: Data root used when neither an argument nor $FASTMNIST_DATA is given, tried in this order.
DATA_ROOTS = ("./data/mnist", "~/.cache/fastmnist/mnist")

#: Mirrors tried in order by ``fastmnist download``; each must serve the four ``.gz`` files.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

#: Seconds before a download attempt from one mirror is abandoned.
DOWNLOAD_TIMEOUT = _from_env("DOWNLOAD_TIMEOUT", "FASTMNIST_DOWNLOAD_TIMEOUT", 30.0, above=True)

#: The training loop reads the loss back from the backend every this many steps (progress bar);
#: never per step, since on a GPU every read is a host synchronisation.
PROGRESS_EVERY = 100

#: The progress bar is redrawn at most this often (seconds); on the CPU it is updated every step.
PROGRESS_SECONDS = _from_env("PROGRESS_SECONDS", "FASTMNIST_PROGRESS_SECONDS", 0.5)

#: The training history's within-epoch curve gets a point about every this many steps
#: (fastmnist.trainer.CURVE_KEYS).
CURVE_STEPS = 10

#: Batch size used by evaluate()/predict() when none is given.
EVAL_BATCH_SIZE = 1000

#: numba backend: stride-1 convolutions whose C*KH*KW is at most this run as a direct convolution
#: instead of im2col + BLAS (1x5x5 = 25 and 24x3x3 = 216 are both far faster direct, because
#: im2col writes KH*KW copies of the input; see docs/benchmarks.md).
DIRECT_CONV_MAX_K = 1024

#: backend "auto" for a zoo model: a dense-only network whose recipe trains in batches under this
#: size goes to numba even where a GPU works (fastmnist.backends.resolve_for_model says why).
AUTO_DEVICE_MIN_BATCH = 128

#: numba backend: run BLAS single-threaded while training (see numba_backend.training_context).
NUMBA_SINGLE_THREAD_BLAS = True

#: numba backend: OMP_WAIT_POLICY for Numba's OpenMP threads, set when the backend is imported unless
#: the environment already sets it ('' leaves it alone). PASSIVE: idle threads sleep, after
#: NUMBA_GOMP_SPINCOUNT spins, instead of spinning for good on a core the next serial loop or BLAS
#: needs (numba_backend.py says what it measured).
NUMBA_OMP_WAIT_POLICY = os.environ.get("FASTMNIST_OMP_WAIT_POLICY", "PASSIVE")
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # as the user set it (bench restores it for PyTorch)

#: numba backend: GOMP_SPINCOUNT for Numba's OpenMP threads, set with the wait policy unless the
#: environment sets GOMP_SPINCOUNT itself (0: no spinning, the threads sleep at once). An idle thread
#: spins this many times (about 8 ms on a 2-core Zen 4) before it sleeps, so the next parallel
#: region of a training step finds it awake: waking a sleeping one cost 10-70 us for an empty region
#: and up to 350 us for a working one there (benchmarks/results/spin-zen4.txt). Nothing else runs on
#: the cores inside a training step: its parallel BLAS products run on the same threads
#: (NUMBA_BLAS_IN_REGIONS).
NUMBA_GOMP_SPINCOUNT = _from_env("NUMBA_GOMP_SPINCOUNT", "FASTMNIST_GOMP_SPINCOUNT", 300000, integer=True)
USER_GOMP_SPINCOUNT = os.environ.get("GOMP_SPINCOUNT")

#: numba backend: the order in which Numba tries its threading layers, set when the backend is
#: imported unless the environment sets NUMBA_THREADING_LAYER or NUMBA_THREADING_LAYER_PRIORITY.
#: Numba's own order puts TBB first wherever the ``tbb`` package is installed (the ``mkl`` extra
#: brings it); the spin settings above, the compiled MLP steps split over the cores (TBB may run
#: two parts on one thread, so they stay whole there) and the figures in docs/ are OpenMP's (one
#: A/B of the seventeenth session, labelled so, ran on TBB before this setting).
NUMBA_THREADING_LAYER_PRIORITY = ("omp", "tbb", "workqueue")

#: numba backend: the parallel BLAS products of a training step (a dense layer's backward pass, a
#: product split over the cores: numba_backend._products_at_once) run as one Numba parallel region
#: calling a BLAS gemm (numba_blas.py; NUMBA_GEMM below); False: on a pool of Python threads
#: calling NumPy's BLAS, as where no gemm can be called from Numba.
NUMBA_BLAS_IN_REGIONS = True

#: numba backend: the library whose gemm those products call (numba_blas.gemm_library).
#: 'numpy': the BLAS NumPy uses. 'mkl': Intel MKL from the ``mkl`` package (``pip install
#: 'fastmnist[mkl]'``), its sequential layer, so each product runs whole on the Numba thread that
#: calls it; an error where it is not installed. 'auto': MKL where it is installed and the CPU is
#: an Intel one, NumPy's BLAS otherwise. On a 2-core Xeon (AVX-512) MKL ran the CNNs' first dense
#: layers' backward pairs 20-22% faster than NumPy's OpenBLAS, and their training steps 1.5-5%
#: (benchmarks/gemm_libraries.py, step_ab.py; docs/benchmarks.md); it was not measured on an AMD
#: CPU, so 'auto' leaves those on NumPy's. FASTMNIST_NUMBA_GEMM sets it.
NUMBA_GEMM_CHOICES = ("auto", "numpy", "mkl")
NUMBA_GEMM = _choice_from_env("NUMBA_GEMM", "FASTMNIST_NUMBA_GEMM", "auto", NUMBA_GEMM_CHOICES)

#: numba backend: an elementwise kernel (activations, bias, dropout, softmax, optimizer updates)
#: over fewer elements runs on one core, as its serial twin (numba_backend.serial_twin): a parallel
#: region wakes the sleeping OpenMP threads, ~37-45 us measured on a 2-core VM, against ~3 us of
#: work for 24 biases and ~17 us for ReLU over 65k floats. Adam goes parallel from
#: ADAM_PARALLEL_MIN_ELEMENTS, in tasks of ADAM_BLOCK elements.
PARALLEL_MIN_ELEMENTS = 131072
ADAM_BLOCK = 16384
#: numba backend: Adam over all of a model's parameters runs on one core below this many: it is
#: memory-bound, and a parallel region's wake-up can cost more than the second core gains. With
#: the threads spinning between regions (NUMBA_GOMP_SPINCOUNT), on a 2-core Zen 4, training steps
#: alternated in blocks in one process (Adam's time, the step's; medians): dropout-cnn's 403k
#: parameters 0.67 -> 0.50 ms, 7.00 -> 6.73 ms; simple-cnn's 434k 0.50 -> 0.40 ms, 4.52 -> 4.45 ms;
#: fast-cnn's 215k 0.53 -> 0.50 ms, steps within their noise (12.57 / 12.60 ms). (Before the
#: spinning, on a 2-core Xeon, fast-cnn's took 0.31-0.34 ms on one thread and 0.39 on two.)
ADAM_PARALLEL_MIN_ELEMENTS = 100_000

#: numba backend: inside training_context, matrix products of at least this many FLOPs are split
#: over the cores by hand (BLAS itself is single-threaded there).
SPLIT_GEMM_MIN_FLOPS = 20_000_000

#: numba backend: inside training_context, above SPLIT_GEMM_MIN_FLOPS, a dense layer's forward
#: product whose output columns are a whole number of micro-kernel tiles runs on numba_dense.py's
#: tiles (one parallel region) instead of single-threaded BLAS calls split over the cores; its
#: backward pass stays on those BLAS calls. False: BLAS for the forward product too.
NUMBA_DENSE_TILES = True

#: numba backend: inside training_context, a dense layer with at most this many outputs (the
#: ten-class layers) and fewer than SPLIT_GEMM_MIN_FLOPS runs its forward and backward passes
#: each as one call of numba_dense.py's narrow kernels, on one thread, instead of single-threaded
#: BLAS calls and a separate bias pass (0: never).
NARROW_DENSE_COLUMNS = 16

#: numba_dense.py: the reduction of a tiled product goes in blocks of this many terms, so a block
#: of the right-hand matrix stays in cache across the row tiles that read it (dropout-cnn's 3136 ->
#: 128 layer on a 2-core Xeon: 0.64 ms with blocks of 400-800, 0.95 ms unblocked).
DENSE_K_BLOCK = 512

#: numba backend: stride-1 convolutions fused with ReLU and max-pooling run on the register-tiled
#: micro-kernels of numba_tiles.py (False: the older saxpy kernels of numba_kernels.py).
NUMBA_TILED_CONV = True

#: numba backend: a fused 3x3 stride-1 convolution -> ReLU -> max-pool with an even output runs its
#: input and weight gradients, and (when the pooling is 2x2 at stride 2) its forward pass, by Winograd's
#: F(2x2, 3x3) (numba_winograd.py: 2.25x fewer multiplications; results within a few float32 ulps
#: of the direct kernels', so an exact tie between two pixels of a pooling window may resolve the
#: other way, and an infinite input gives NaN where the direct kernel gives +-inf). Only from
#: CONV_WINOGRAD_MIN_CHANNELS input channels (and filters, for the gradients): with fewer,
#: the transforms are too large a share of the work. False keeps the direct kernels;
#: CONV_WINOGRAD_WEIGHT_GRADIENT = False only the weight gradient's (fast-cnn's conv2: 1.34 against
#: 1.80 ms a batch by Winograd, benchmarks/conv_passes.py).
CONV_WINOGRAD = True
CONV_WINOGRAD_MIN_CHANNELS = 8
CONV_WINOGRAD_WEIGHT_GRADIENT = True
#: numba backend: a fused conv + ReLU + pool layer whose window rows are short (KH*ceil(KW*C/8)
#: float32 vectors at most numba_window_grad.WINDOW_MAX_VECTORS: the first layers) takes its
#: weight gradient from the pooled side, one window per pooled value (numba_window_grad.py), where
#: the dense product multiplies the three zeros of every 2x2 window too. False keeps the dense one.
CONV_WINDOW_WEIGHT_GRADIENT = True
#: the same for layers whose window rows are longer (up to numba_window_grad.WIDE_MAX_VECTORS
#: vectors of the target's width: fast-cnn's conv2, 3 rows of 3x24 values), a few rows a call, in
#: place of Winograd's weight gradient (CONV_WINOGRAD_WEIGHT_GRADIENT): 2x2 pooling leaves a
#: quarter of the pixels, Winograd's F(2x2, 3x3) saves 2.25x. False keeps the first layers' only.
CONV_WINDOW_WIDE = True
#: numba backend: a fused convolution layer asked for its output channels last (the next layer is
#: one too: conv2d_relu_maxpool_forward's ``channels_last``) writes it so, and the next reads it and
#: returns its gradient so, with no transposes between them. False: channels first throughout.
NUMBA_CHANNELS_LAST = True

#: numba backend: a one-channel input (every zoo CNN's first layer) runs its forward product on the
#: unit-stride tiles (numba_tiles.tile_rows_unit: no pointer per pixel, longer tiles). False: the
#: tiles of any other layer, for A/B timings.
CONV_UNIT_TILES = True
#: numba backend: a one-channel layer on AVX-512 whose output rows fit two vectors and whose output
#: goes on channels first (dropout-cnn's and simple-cnn's first layers: numba_lanes.lanes_apply)
#: runs its forward pass with the output pixels in the vector lanes (numba_lanes.py), y and its
#: argmax channels first, the same bits as the filters-in-lanes tiles. False: numba_conv's tiles,
#: for A/B timings.
CONV_PIXEL_LANES = True
#: numba backend: the tiled convolution's forward pass prefetches the next image's lines of its
#: output for writing before each image (numba_tiles.prefetch_for_write): writing y's memory cost
#: the first layers' forward pass about as much as their pooling and stores together
#: (benchmarks/conv_forward_pieces.py). False: no prefetch, for A/B timings.
CONV_PREFETCH_OUTPUT = True

#: numba backend: images per task in the tiled convolution's backward pass. Each task writes its
#: own weight-gradient partial, summed in task order, so the result does not depend on the number
#: of threads; 8 images of fast-cnn's conv2 (input and gradient) stay within a 1 MiB L2 cache.
CONV_TILE_CHUNK = 8

#: numba backend: the blocked direct convolution groups samples so that one block's accumulator
#: holds at most this many floats (16 KiB of float32: well inside a 32 KiB L1 data cache).
CONV_BLOCK_FLOATS = 4096

#: numba backend: input planes (padded H*W) up to this size use the blocked direct convolution
#: (fast-cnn's 12x12 conv2: 18% faster per step); larger planes, one sample at a time
#: (simple-cnn's 28x28 conv1 measured 3.9 ms against 5.5 ms blocked, its accumulator spilling L1).
CONV_BLOCK_MAX_PLANE = 400

#: cupy backend: threads per block of every launch. The block reductions (softmax-CE, MSE) size
#: their shared memory from it at compile time, so it must be a power of two in 32..1024.
CUDA_THREADS = 256

#: cupy backend: matrix products on kernels.cu's own gemm (and colsum for bias gradients) instead
#: of cuBLAS and CuPy's sum. A CUDA graph can capture those (CuPy cannot capture cuBLAS: issue 19);
#: False until a GPU has timed the two side by side. FASTMNIST_CUPY_OWN_GEMM=1 turns it on.
CUPY_OWN_GEMM = _from_env("CUPY_OWN_GEMM", "FASTMNIST_CUPY_OWN_GEMM", 0, integer=True, maximum=1) == 1

#: cupy backend: fit() replays its steps as CUDA graphs where it can (Adam, no dropout, no
#: augmentation: fastmnist/graph_steps.py), the products on the own gemm. Checked on cupy-sim
#: only, so False until a GPU has timed it against the eager path. FASTMNIST_CUDA_GRAPHS=1 turns it on.
CUDA_GRAPHS = _from_env("CUDA_GRAPHS", "FASTMNIST_CUDA_GRAPHS", 0, integer=True, maximum=1) == 1

#: cupy-sim backend: the simulated device's memory in bytes (an allocation beyond it raises
#: CuPy's OutOfMemoryError, so the out-of-memory path is testable without a GPU).
CUDASIM_MEMORY_BYTES = _from_env("CUDASIM_MEMORY_BYTES", "FASTMNIST_CUDASIM_MEMORY", 8 * 2**30, integer=True, above=True)

#: Compiled training steps (fastmnist.steps): how many steps one compiled call runs. Progress,
#: ``stop`` (Ctrl-C, checkpoints) and the divergence message run between calls; results never depend
#: on it. A fit's first call runs STEP_CHUNK_FIRST_SAMPLES samples of steps; each later one as
#: many as the last call's pace fits in STEP_CHUNK_SECONDS; never more than STEP_CHUNK_SAMPLES
#: samples. Each call costs 0.1-0.4 ms (its Python, the call, a cold first step): chunks of 4096
#: samples, 15 calls a two-layer epoch, spent 9.5 ms of a 134 ms fit outside the steps, one call
#: 3.9 ms (2-core Xeon, benchmarks/fit_outside.py).
STEP_CHUNK_SAMPLES = 2**20
STEP_CHUNK_FIRST_SAMPLES = 1024
STEP_CHUNK_SECONDS = 0.2

#: numba's compiled steps: a dense layer whose batch has at most STEP_SMALL_BATCH rows, or whose
#: input has at most STEP_SPARSE_DENSITY non-zeros (MNIST images: ~19%) and which has at least
#: STEP_SPARSE_MIN_OUTPUTS outputs, runs its products as loops over the non-zero inputs; others call
#: BLAS. Measured (2-core EPYC Zen 4, MNIST): relu-mlp's 784->256 at batch 200 0.34 s an epoch on
#: the loops against 0.65 s on BLAS; two-layer's 784->50 at batch 100 0.137-0.139 s against
#: 0.206-0.223 s (since the non-zeros are found by compresses and SGD's rows stay in registers;
#: before that the loops only tied BLAS at 50 outputs, and the floor was 128).
STEP_SMALL_BATCH = 16
STEP_SPARSE_DENSITY = 0.5
STEP_SPARSE_MIN_OUTPUTS = 32

#: numba's compiled steps: batches of at least this many rows spread the products, dropout and the
#: optimizer over the threads. Each parallel region wakes a sleeping thread (tens of microseconds
#: with passive waiting): two-layer's batch of 100 ran 0.29 s an epoch parallel, 0.23 s not.
STEP_PARALLEL_BATCH = 128

#: numba's compiled steps: batches of at least STEP_SPLIT_BATCH rows are split over STEP_SPLIT_PARTS
#: threads for a whole chunk of steps (one parallel region, the parts meeting at spin barriers:
#: numba_sync.py) where Numba has that many threads and a threading layer that runs them at once;
#: the per-phase regions of STEP_PARALLEL_BATCH serve only where it has not. 1 turns the split off.
#: Measured on a 2-core Zen 3, epochs alternated in one process (docs/benchmarks.md): two-layer
#: (b100) 0.19 s split against 0.27 s not, relu-mlp (b200) 0.53 against 0.95 s (its phases on the
#: threads). small-mlp (b10) gained on a quiet VM (0.25 against 0.30 s) and lost when the other
#: core was taken now and then (0.58 against 0.41 s): its steps are a few microseconds between
#: barriers, and a part whose core is taken stalls the other. So it is not split.
STEP_SPLIT_PARTS = 2
STEP_SPLIT_BATCH = 64

#: fastmnist sweep: seconds to wait for a Dask scheduler given with --scheduler before saying it
#: did not answer.
SWEEP_CONNECT_TIMEOUT_S = 5

#: fastmnist predict without a model trains the reader on the first this many MNIST training
#: images (0: all of them); tests set it small through FASTMNIST_READER_TRAIN_LIMIT.
READER_TRAIN_LIMIT = _from_env("READER_TRAIN_LIMIT", "FASTMNIST_READER_TRAIN_LIMIT", 0, integer=True)

#: The reader is this many networks of its recipe (seeds 0, 1, ...), read by the mean of their
#: probabilities (fastmnist.ensemble). Three against one, on five wide photo samples: digits
#: 96.65% -> 96.9%, numbers exact 87.8% -> 89.2%, MNIST test 99.32% -> 99.47% (docs/photos.md).
READER_MEMBERS = 3

#: Training digits photographed and prepared as predict reads a photo (fastmnist.photos.training,
#: a zoo recipe's ``photo_digits``): the photo's long side in pixels is drawn from this range (the
#: ink mask works on at least 112), and this share of the photos take the wide conditions (turns to
#: 15 degrees, thick and thin pens, blur to 1.5 px); the rest are the ordinary ones.
PHOTO_DIGIT_SIDES = (112, 300)
PHOTO_DIGIT_WIDE = 0.8
#: Digits per task handed to a worker process.
PHOTO_DIGIT_CHUNK = 500


#: fastmnist bench --interleave: seconds a target's process sleeps after each timed epoch before the
#: next target's turn, longer than the threads of any library spin after their last parallel region
#: (Numba's: about 8 ms at NUMBA_GOMP_SPINCOUNT on a 2-core Zen 4; fastmnist/bench/lockstep.py).
BENCH_INTERLEAVE_GAP_S = 0.3

for _setting in _BAD_ENVIRONMENT:  # read, they raise (__getattr__); assigned again, they work
    del globals()[_setting]


def __getattr__(name: str):
    if name in _BAD_ENVIRONMENT:
        raise InvalidArgument(_BAD_ENVIRONMENT[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_environment() -> None:
    """Raise InvalidArgument for the first FASTMNIST_* variable refused at import whose setting has
    not been assigned since."""
    for setting, message in _BAD_ENVIRONMENT.items():
        if setting not in globals():
            raise InvalidArgument(message)
