"""The seed tutorials' own training code, as they write it: the reference `fastmnist bench` times
the zoo MLPs against (backend name ``tutorial``).

Each class keeps its tutorial's structure and arithmetic — float64, NumPy, the same loops and
products — because the point is the tutorial's speed, not a tidied version of it:

* ``sigmoid-mlp``: the classic NumPy MLP tutorial (784-200-10, sigmoid, squared error, lr 0.1, one
  sample per step, column vectors and ``numpy.dot``; no biases, as in the tutorial);
* ``small-mlp``: Nielsen's ``network.py`` (784-30-10, sigmoid, quadratic cost, eta 3.0, mini-batches
  of 10 whose samples are back-propagated one at a time);
* ``two-layer``: Saitoh's ``TwoLayerNet`` (784-50-10, sigmoid, softmax cross-entropy, lr 0.1,
  batches of 100 drawn at random, 600 iterations per epoch).

Only the training epoch is timed; evaluation and the tutorials' per-iteration bookkeeping (loss
lists, accuracy prints) are left out, which only makes the reference faster.
"""
from __future__ import annotations

import numpy as np

try:
    from scipy.special import expit as _expit  # the classic tutorial's sigmoid
except ImportError:  # same values, a little slower
    def _expit(x):
        return 1.0 / (1.0 + np.exp(-x))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class ClassicMLP:
    """The classic NumPy MLP tutorial's network and ``train`` (one sample per call)."""

    def __init__(self, seed=0, inodes=784, hnodes=200, onodes=10, lr=0.1):
        rng = np.random.default_rng(seed)
        self.wih = rng.normal(0.0, hnodes ** -0.5, (hnodes, inodes))
        self.who = rng.normal(0.0, onodes ** -0.5, (onodes, hnodes))
        self.lr = lr

    def train(self, inputs_list, targets_list):
        inputs = np.array(inputs_list, ndmin=2).T
        targets = np.array(targets_list, ndmin=2).T
        hidden_outputs = _expit(np.dot(self.wih, inputs))
        final_outputs = _expit(np.dot(self.who, hidden_outputs))
        output_errors = targets - final_outputs
        hidden_errors = np.dot(self.who.T, output_errors)
        self.who += self.lr * np.dot(output_errors * final_outputs * (1.0 - final_outputs), hidden_outputs.T)
        self.wih += self.lr * np.dot(hidden_errors * hidden_outputs * (1.0 - hidden_outputs), inputs.T)

    def prepare(self, x, y):
        """The tutorial's inputs (scaled to 0.01..1.0) and targets (0.01, 0.99 at the label)."""
        targets = np.full((len(y), 10), 0.01)
        targets[np.arange(len(y)), y] = 0.99
        return np.asarray(x, np.float64).reshape(len(x), -1) * 0.99 + 0.01, targets

    def epoch(self, data):
        inputs, targets = data
        for record, target in zip(inputs, targets):
            self.train(record, target)

    def query(self, inputs_list):
        inputs = np.array(inputs_list, ndmin=2).T
        return _expit(np.dot(self.who, _expit(np.dot(self.wih, inputs))))

    def accuracy(self, x, y):
        inputs, _ = self.prepare(x, y)
        return float(np.mean([np.argmax(self.query(r)) == t for r, t in zip(inputs, y)]))


class NielsenNetwork:
    """Nielsen's ``network.py``: ``SGD`` over mini-batches, ``backprop`` one sample at a time."""

    def __init__(self, sizes=(784, 30, 10), seed=0, eta=3.0, mini_batch_size=10):
        rng = np.random.default_rng(seed)
        self.rng, self.eta, self.mini_batch_size = rng, eta, mini_batch_size
        self.num_layers = len(sizes)
        self.biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]
        self.weights = [rng.standard_normal((y, x)) for x, y in zip(sizes[:-1], sizes[1:])]

    def prepare(self, x, y):
        """The tutorial's ``load_data_wrapper`` format: a list of ((784, 1), (10, 1)) pairs."""
        xs = np.asarray(x, np.float64).reshape(len(x), 784, 1)
        out = []
        for xi, yi in zip(xs, y):
            e = np.zeros((10, 1))
            e[yi] = 1.0
            out.append((xi, e))
        return out

    def epoch(self, training_data):
        self.rng.shuffle(training_data)
        n = len(training_data)
        for k in range(0, n, self.mini_batch_size):
            self.update_mini_batch(training_data[k:k + self.mini_batch_size], self.eta)

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = _sigmoid(np.dot(w, a) + b)
        return a

    def accuracy(self, x, y):
        data = self.prepare(x, y)
        return float(np.mean([np.argmax(self.feedforward(xi)) == t for (xi, _), t in zip(data, y)]))

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = _sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * _sigmoid(zs[-1]) * (1 - _sigmoid(zs[-1]))
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for layer in range(2, self.num_layers):
            z = zs[-layer]
            sp = _sigmoid(z) * (1 - _sigmoid(z))
            delta = np.dot(self.weights[-layer + 1].transpose(), delta) * sp
            nabla_b[-layer] = delta
            nabla_w[-layer] = np.dot(delta, activations[-layer - 1].transpose())
        return nabla_b, nabla_w


def _softmax(x):
    x = x.T
    x = x - np.max(x, axis=0)
    y = np.exp(x) / np.sum(np.exp(x), axis=0)
    return y.T


class TwoLayerNet:
    """Saitoh's ``TwoLayerNet`` with its ``gradient`` (backprop) and training loop."""

    def __init__(self, input_size=784, hidden_size=50, output_size=10, weight_init_std=0.01, seed=0, lr=0.1,
                 batch_size=100):
        rng = np.random.default_rng(seed)
        self.rng, self.lr, self.batch_size = rng, lr, batch_size
        self.params = {"W1": weight_init_std * rng.standard_normal((input_size, hidden_size)),
                       "b1": np.zeros(hidden_size),
                       "W2": weight_init_std * rng.standard_normal((hidden_size, output_size)),
                       "b2": np.zeros(output_size)}

    def prepare(self, x, y):
        t = np.zeros((len(y), 10))
        t[np.arange(len(y)), y] = 1.0
        return np.asarray(x, np.float64).reshape(len(x), -1), t

    def predict(self, x):
        z1 = _sigmoid(np.dot(x, self.params["W1"]) + self.params["b1"])
        return _softmax(np.dot(z1, self.params["W2"]) + self.params["b2"])

    def accuracy(self, x, y):
        return float(np.mean(np.argmax(self.predict(self.prepare(x, y)[0]), axis=1) == y))

    def gradient(self, x, t):
        W1, W2, b1, b2 = self.params["W1"], self.params["W2"], self.params["b1"], self.params["b2"]
        grads = {}
        batch_num = x.shape[0]
        a1 = np.dot(x, W1) + b1
        z1 = _sigmoid(a1)
        a2 = np.dot(z1, W2) + b2
        y = _softmax(a2)
        dy = (y - t) / batch_num
        grads["W2"] = np.dot(z1.T, dy)
        grads["b2"] = np.sum(dy, axis=0)
        da1 = np.dot(dy, W2.T)
        dz1 = (1.0 - _sigmoid(a1)) * _sigmoid(a1) * da1
        grads["W1"] = np.dot(x.T, dz1)
        grads["b1"] = np.sum(dz1, axis=0)
        return grads

    def epoch(self, data):
        x_train, t_train = data
        train_size = x_train.shape[0]
        for _ in range(max(train_size // self.batch_size, 1)):
            batch_mask = self.rng.choice(train_size, self.batch_size)
            x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
            grad = self.gradient(x_batch, t_batch)
            for key in ("W1", "b1", "W2", "b2"):
                self.params[key] -= self.lr * grad[key]


TUTORIALS = {"sigmoid-mlp": ClassicMLP, "small-mlp": NielsenNetwork, "two-layer": TwoLayerNet}


def tutorial_epoch(model_name: str, x, y, seed: int = 0):
    """``(epoch, net)``: ``epoch()`` trains one epoch of ``model_name``'s tutorial network ``net`` on
    ``(x, y)``, the data prepared in the tutorial's own format beforehand (untimed); None where the
    zoo model has no tutorial."""
    cls = TUTORIALS.get(model_name)
    if cls is None:
        return None
    net = cls(seed=seed)
    data = net.prepare(x, y)
    return (lambda: net.epoch(data)), net
