"""Quantization-aware training with per-epoch checkpoints and resume.

Training hooks (used by flip-based allocation and planes-aware training) are objects with any of
``before_step(model, step)``, ``after_backward(model)``, ``after_step(model, step)``,
``on_epoch_end(model, epoch)`` and
``state_dict()`` / ``load_state_dict(d)`` so an interrupted run resumes with their state.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flipq.host.files import replacing
from flipq.quant.models import as_tensor


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        check_counts(self, epochs=0, batch_size=1, threads=1)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")


def check_counts(cfg, **minimum: int) -> None:
    """Raise a ValueError naming the first field of ``cfg`` that is not an int (bools are not)
    of at least its ``minimum``."""
    for name, low in minimum.items():
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name}={v!r} must be an int >= {low}")


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray | None = None,
             batch_size: int = 512) -> tuple[np.ndarray, float | None]:
    """Model outputs (float64) on ``x`` and, with labels, top-1 accuracy."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(as_tensor(model(torch.from_numpy(x[i:i + batch_size]))).double().numpy())
    out = np.concatenate(outs)
    acc = float((out.argmax(1) == y).mean()) if y is not None else None
    return out, acc


def train(model: torch.nn.Module, ds, cfg: TrainConfig, checkpoint: str | Path | None = None,
          hooks: tuple = ()) -> dict:
    """Train ``model`` on ``ds``; checkpoint after every epoch; resume if ``checkpoint`` exists.

    Returns a history dict (per-epoch loss and test accuracy, seconds).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    history = {"epoch": [], "loss": [], "test_accuracy": [], "seconds": 0.0}
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt)
        load_model_state(model, state, ckpt)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
        load_runtime_stats(model, state.get("runtime_stats", {}))
        for hook, hs in zip(hooks, state.get("hooks", [])):
            if hasattr(hook, "load_state_dict"):
                hook.load_state_dict(hs)
    x_tr = torch.from_numpy(ds.x_train)
    y_tr = torch.from_numpy(ds.y_train)
    n = len(x_tr)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="train", unit="epoch",
               disable=not cfg.progress, leave=False)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        perm = torch.randperm(n)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            for hook in hooks:
                if hasattr(hook, "before_step"):
                    hook.before_step(model, epoch * steps_per_epoch + b)
            opt.zero_grad()
            loss = F.cross_entropy(as_tensor(model(x_tr[idx])), y_tr[idx])
            loss.backward()
            for hook in hooks:
                if hasattr(hook, "after_backward"):
                    hook.after_backward(model)
            opt.step()
            for hook in hooks:
                if hasattr(hook, "after_step"):
                    hook.after_step(model, epoch * steps_per_epoch + b)
            total += loss.item() * len(idx)
        sched.step()
        for hook in hooks:
            if hasattr(hook, "on_epoch_end"):
                hook.on_epoch_end(model, epoch)
        _, acc = evaluate(model, ds.x_test, ds.y_test)
        history["epoch"].append(epoch)
        history["loss"].append(total / n)
        history["test_accuracy"].append(acc)
        history["seconds"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        bar.set_postfix(loss=f"{total / n:.3f}", acc=f"{acc:.3f}")
        bar.update(1)
        if ckpt is not None:
            save_checkpoint(ckpt, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch, "history": history,
                "torch_rng": torch.get_rng_state(), "config": asdict(cfg),
                "hooks": [h.state_dict() if hasattr(h, "state_dict") else None for h in hooks],
                "runtime_stats": runtime_stats(model),
            })
    bar.close()
    return history


def runtime_stats(model: torch.nn.Module) -> dict:
    """State the model's state dict leaves out: Brevitas activation scales collect statistics
    for their first ``collect_stats_steps`` (300) training steps, and ``state_dict()`` stores the
    running statistic *as* the learned value, which loading then treats as finished. A resume
    inside that window would skip the rest of the collection and start from another value."""
    out = {}
    for name, m in model.named_modules():
        if hasattr(m, "collect_stats_steps") and isinstance(getattr(m, "buffer", None), torch.Tensor):
            out[name] = {"counter": int(m.counter), "buffer": m.buffer.detach().clone(),
                         "value": m.value.detach().clone()}
    return out


def load_runtime_stats(model: torch.nn.Module, stats: dict) -> None:
    modules = dict(model.named_modules())
    for name, s in stats.items():
        m = modules.get(name)
        if m is None or not hasattr(m, "collect_stats_steps"):
            raise ValueError(f"checkpoint holds activation statistics for '{name}', which the model lacks")
        m.counter = s["counter"]
        with torch.no_grad():
            m.buffer.copy_(s["buffer"])
            m.value.copy_(s["value"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a run killed mid-save keeps the previous epoch's checkpoint."""
    with replacing(path) as tmp:
        torch.save(state, tmp)


def load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Load a checkpoint's weights into ``model``; a checkpoint of another network is a
    one-line ValueError naming the file, not torch's list of every key."""
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} does not fit this network ({detail}); use --fresh to discard it, "
                         "or another --out folder") from e


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    import pickle

    # weights_only: a checkpoint is data (tensors, numbers, strings, lists, dicts: all flipq
    # writes); one that needs any other class to load could run code, and is refused
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if "global" in line.lower()), lines[-1] if lines else "")
        raise ValueError(f"{path}: refused, the checkpoint holds more than tensors and plain data ({why}); "
                         "flipq loads only what it writes (use --fresh to train anew)") from None
    except Exception as e:
        raise ValueError(f"{path}: corrupt or unreadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a flipq checkpoint (holds a {type(state).__name__}, not a dict); "
                         "use --fresh to train anew")
    return state
