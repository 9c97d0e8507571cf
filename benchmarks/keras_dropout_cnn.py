"""dropout-cnn trained by the Keras recipe it comes from, as written: Glorot-uniform convolution,
normal(0, 0.05) dense layers, zero biases, Adam lr 0.001 with epsilon 1e-7, batch 200, 10 epochs,
the last 20% of the training set held out for validation (Keras's validation_split), test accuracy
at the end. Reports each seed and the mean.

    python3 benchmarks/keras_dropout_cnn.py --seeds 0,1,2 --out benchmarks/results/dropout-cnn-keras.json
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import fastmnist
from fastmnist.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastmnist.model import Sequential
from fastmnist.optim import make_optimizer


def keras_network(seed, backend=None):
    layers = [Conv2D(16, 5, pad="same", init="glorot"), ReLU(), MaxPool2D(2), Flatten(),
              Dense(128, init="normal:0.05"), ReLU(), Dropout(0.5), Dense(10, init="normal:0.05")]
    return Sequential(layers, (1, 28, 28), "softmax_cross_entropy", backend=backend, seed=seed, name="dropout-cnn-keras")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    (x, y), (xt, yt) = fastmnist.load_mnist()
    split = int(0.8 * len(x))  # Keras takes the last 20% as validation data, before any shuffling
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        model = keras_network(seed)
        t0 = time.perf_counter()
        history = model.fit(x[:split], y[:split], epochs=args.epochs, batch_size=200,
                            optimizer=make_optimizer("adam", 0.001, eps=1e-7), validation_data=(x[split:], y[split:]),
                            verbose=0, seed=seed)
        test = model.evaluate(xt, yt)
        runs.append({"seed": seed, "test_accuracy": test["accuracy"], "val_accuracy": history["val_accuracy"],
                     "seconds": time.perf_counter() - t0, "backend": model.backend.name})
        print(json.dumps(runs[-1]))
    result = {"recipe": __doc__.split("\n\n")[0], "runs": runs,
              "mean_test_accuracy": statistics.fmean(r["test_accuracy"] for r in runs)}
    print(f"mean test accuracy over {len(runs)} seeds: {100 * result['mean_test_accuracy']:.2f}%")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
