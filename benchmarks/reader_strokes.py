"""Train the zoo's `reader` with extra augmentation ranges (stroke thickness, blur), to compare on
the wide photos with benchmarks/photo_accuracy.py:

    python3 benchmarks/reader_strokes.py /tmp/reader-b.npz '{"thickness": 0.8, "blur": 1.5}'
    python3 benchmarks/photo_accuracy.py --model /tmp/reader-b.npz --wide --seed 2 --out ...

Seed 0, the recipe's optimizer, schedule, batch size and epochs; prints the MNIST test accuracy
and the training time.
"""
import json
import sys
import time

import fastmnist
from fastmnist import zoo
from fastmnist.augment import Augment


def main(out: str, extra: dict) -> None:
    (x, y), (xt, yt) = fastmnist.load_mnist()
    model = zoo.create("reader", seed=0)
    args = zoo.fit_args("reader")
    args["augment"] = Augment(**{**args["augment"].config(), **extra})
    started = time.perf_counter()
    model.fit(x, y, verbose=0, seed=0, **args)
    print(out, extra, "MNIST test accuracy", model.evaluate(xt, yt)["accuracy"],
          f"trained in {time.perf_counter() - started:.1f} s", flush=True)
    model.save(out)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
