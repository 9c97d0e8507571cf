"""Pictures of training (matplotlib, Agg backend, PNG): curves, samples, confusion matrix, and the
most confidently misclassified test images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FastMnistError


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise FastMnistError("plots need matplotlib: pip install 'fastmnist[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:  # a file where a directory should be, no permission, a full disk
        raise FastMnistError(f"{path}: could not write the picture ({exc})") from None
    finally:
        _plt().close(fig)
    return path


def training_curves(history: dict, path, title: str = "training") -> Path:
    """Loss and accuracy from a ``fit()`` history: the within-epoch curve (windows of about
    ``config.CURVE_STEPS`` steps; x is the epoch position, so a one-epoch run is a curve, not a
    dot) with epoch boundaries marked, and each epoch's train and validation values at its end."""
    plt = _plt()
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    if not len(epochs):
        raise FastMnistError("the history holds no epoch to plot")
    at = history.get("curve_epoch") or []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in ((ax1, "loss", "loss"), (ax2, "accuracy", "accuracy")):
        if len(at) >= 2 and len(history.get(f"curve_{key}", [])) == len(at):
            ax.plot(at, history[f"curve_{key}"], "-", lw=1, alpha=0.8, label=f"train {name}, within epochs")
        ax.plot(epochs, history[key], "o", label=f"train {name}, epoch mean")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {name}")
        for boundary in epochs[:-1]:
            ax.axvline(boundary, color="0.8", lw=0.8, ls="--", zorder=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_xlim(0, epochs[-1] * 1.02)
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def sample_grid(x, y, path, rows: int = 5, cols: int = 10, predicted=None) -> Path:
    """A grid of images with their labels (and predictions, where given)."""
    plt = _plt()
    x = np.asarray(x).reshape(len(x), 28, 28)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= len(x):
            continue
        ax.imshow(x[i], cmap="gray_r")
        label = f"{y[i]}" if predicted is None else f"{y[i]}→{predicted[i]}"
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(y_true, y_pred, classes: int = 10) -> np.ndarray:
    m = np.zeros((classes, classes), np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def confusion(y_true, y_pred, path, title: str = "test confusion matrix") -> Path:
    """Counts of true (rows) against predicted (columns) digits."""
    plt = _plt()
    m = confusion_matrix(y_true, y_pred)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(m, cmap="Blues")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {np.trace(m) / m.sum():.4f})")
    fig.colorbar(im)
    fig.tight_layout()
    return _save(fig, path)


def worst_errors(x, y_true, probabilities, path, count: int = 20) -> Path:
    """The misclassified images the model was most sure about, with label -> prediction (p)."""
    plt = _plt()
    probabilities = np.asarray(probabilities)
    pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(pred != np.asarray(y_true))
    order = wrong[np.argsort(-probabilities[wrong, pred[wrong]])][:count]
    cols = 10
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.35), squeeze=False)
    x = np.asarray(x).reshape(len(x), 28, 28)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order):
        ax.imshow(x[i], cmap="gray_r")
        ax.set_title(f"{y_true[i]}→{pred[i]} ({probabilities[i, pred[i]]:.2f})", fontsize=8)
    fig.suptitle(f"most confident mistakes ({len(wrong)} wrong in all); each titled true→predicted (probability)")
    fig.tight_layout()
    return _save(fig, path)


def photo_preparation(image, path, title: str = "preparing a photo for the network") -> Path:
    """Before and after, side by side: the photo (upright), the ink once the light is divided out,
    the pieces kept (grey: found but dropped as specks, lines or faint shading), the 28x28 input."""
    from .photos.images import as_grey, prepare
    stages = prepare(as_grey(image, str(image)), str(image))
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), dpi=100)
    panels = [(stages.grey, "the photo", "gray"), (stages.inks.ink, "ink: light divided out", "gray_r"),
              (stages.pieces_image, "pieces kept (grey: dropped)", "gray"),
              (stages.input, "28x28 input, MNIST-style", "gray")]
    for ax, (img, name, cmap) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest" if img.shape == (28, 28) else "antialiased")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
